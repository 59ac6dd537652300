from nerft.cli.main import main

main()
