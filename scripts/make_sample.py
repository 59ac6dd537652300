"""Regenerate data/sample/*.jsonl from the marked-up sentences below.

The sentences were written for nerft (they are not CLUENER's); `[label:entity]` marks an entity.
Run: python scripts/make_sample.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

TRAIN = """
[name:王立明]昨天在[address:杭州西湖区]的[company:阿里巴巴]园区参加了产品发布会。
[organization:广州恒大]主场2比0击败[organization:上海申花]，[name:李明]梅开二度。
据[government:国家统计局]公布的数据，[address:深圳]上月房价环比上涨0.3%。
新版《[game:王者荣耀]》上线首日，[company:腾讯]服务器一度拥堵。
[position:导演][name:陈凯文]的新片《[movie:长江之夜]》将于下月在[address:北京]首映。
《[book:明朝那些事儿]》作者[name:石小川]近日做客[company:新浪]读书频道。
[scene:故宫博物院]今年国庆期间接待游客超过五十万人次。
[government:教育部]发言人表示，今年高考报名人数再创新高。
[name:张晓红]出任[company:招商银行][position:副行长]，分管零售业务。
玩家们在《[game:英雄联盟]》全球总决赛上为[organization:EDG]战队加油。
[address:成都市武侯区]的[scene:锦里古街]春节期间游人如织。
[company:小米科技]创始人[name:雷军]在发布会上宣布了新款手机。
[organization:中国女排]在[address:东京]夺得冠军后，[position:主教练][name:郎平]接受了采访。
电影《[movie:流浪星球]》票房突破二十亿元，[name:吴京]再次成为焦点。
[government:上海市人民政府]出台新政支持中小企业发展。
这本《[book:三体]》被[name:刘慈欣]的读者誉为中国科幻的里程碑。
[position:记者]从[government:北京市公安局]获悉，相关嫌疑人已被抓获。
今天天气很好，适合出门散步。
[scene:黄山风景区]门票价格下调，[address:安徽]旅游部门预计客流将明显增加。
[company:华为]在[address:巴塞罗那]举办的展会上发布了新一代基站。
《[game:魔兽世界]》怀旧服开放后，[company:网易]股价小幅上涨。
[organization:北京大学]与[organization:清华大学]联合举办人工智能论坛。
[name:赵刚]担任[organization:浙江大学][position:教授]已有十年。
[address:香港]特区[government:立法会]昨日通过了一项新条例。
[movie:大圣归来]导演[name:田晓鹏]透露续集正在制作中。
[name:周杰]在《[book:平凡的世界]》读书会上分享了自己的感受。
[company:万科集团][position:董事长][name:郁亮]表示公司将坚持稳健经营。
[scene:西双版纳热带植物园]吸引了大量科研人员前来考察。
[organization:皇家马德里]以3比1战胜[organization:巴塞罗那]，[name:本泽马]上演帽子戏法。
[government:国务院]常务会议部署进一步扩大内需的措施。
[name:林小雨]是一名来自[address:福建厦门]的[position:程序员]。
由[company:暴雪娱乐]开发的《[game:守望先锋]》推出了新英雄。
"""

DEV = """
[name:孙丽]在[address:南京市鼓楼区]开了一家书店，最畅销的是《[book:围城]》。
[company:京东]宣布与[company:沃尔玛]达成战略合作。
[organization:湖人队]的[name:詹姆斯]赛后接受了[company:央视]的采访。
[government:外交部][position:发言人][name:华春]在例行记者会上回答了提问。
电影《[movie:你好，李焕英]》在[address:上海]举行了路演。
周末去[scene:颐和园]划船的人特别多。
《[game:原神]》的新版本让玩家们期待已久。
这座城市的夜景十分美丽。
[name:黄伟]被任命为[organization:中国科学院]某研究所[position:所长]。
"""

TEST = """
[name:陈明]在[address:武汉]的[company:东风汽车]工作了二十年。
《[game:和平精英]》推出了春节限定皮肤。
[government:财政部]表示将继续实施积极的财政政策。
[scene:张家界国家森林公园]迎来了旅游旺季。
他把《[book:活着]》推荐给了[organization:复旦大学]的同学们。
[position:总经理][name:刘洋]宣布[company:比亚迪]将扩建[address:西安]工厂。
"""

MARK = re.compile(r"\[([a-z]+):([^\]]+)\]")


def to_record(marked: str) -> dict:
    text, label = "", {}
    position = 0
    for match in MARK.finditer(marked):
        text += marked[position : match.start()]
        kind, entity = match.groups()
        label.setdefault(kind, {}).setdefault(entity, []).append([len(text), len(text) + len(entity) - 1])
        text += entity
        position = match.end()
    text += marked[position:]
    return {"text": text, "label": label}


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "data" / "sample"
    out.mkdir(parents=True, exist_ok=True)
    for split, block in (("train", TRAIN), ("dev", DEV), ("test", TEST)):
        lines = [line.strip() for line in block.strip().splitlines() if line.strip()]
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(json.dumps(to_record(line), ensure_ascii=False) + "\n")
        print(f"{split}: {len(lines)} records")


if __name__ == "__main__":
    main()
