"""`nerft doctor`: will this machine run LLaMA-Factory, and this config?

- `snapshot.take_snapshot()` looks at the machine once (torch, driver, GPUs, packages, disks);
- `checks` are pure functions of that snapshot, each known trap with its exact fix;
- `memory` estimates the memory a training plan needs (formula in its docstring);
- `diagnosis.diagnose()` puts them together; `format_diagnosis` prints them.
"""

from nerft.doctor.diagnosis import Diagnosis, diagnose, format_diagnosis

__all__ = ["Diagnosis", "diagnose", "format_diagnosis"]
