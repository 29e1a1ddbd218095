"""Generate the golden tokenizer fixture: >= 5,000 varied strings and the ids OpenAI's tokenizer gives them.

Run in the reference environment (never needed by the project's own tests):

    /work/refenv/bin/python scripts/make_tokenizer_fixtures.py

The reference is OpenAI's original `SimpleTokenizer`, through OpenCLIP's verbatim copy of it. OpenCLIP
renamed the two special tokens (`<start_of_text>` / `<end_of_text>`, same ids 49406 / 49407); they are
renamed back here and the split regex is OpenAI's exact line, so the object below is the original.
Writes tests/data/tokenizer/openai_golden.json.gz: the strings, their ids (no start/end tokens), the
original's `decode` of those ids, plus random id sequences and their decodes.
"""

from __future__ import annotations

import gzip
import json
import random
import sys
from importlib.metadata import version
from pathlib import Path

import regex
from open_clip.tokenizer import SimpleTokenizer

SEED = 20240611
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "tokenizer" / "openai_golden.json.gz"


def openai_original() -> SimpleTokenizer:
    """OpenCLIP's copy of OpenAI's tokenizer with OpenAI's special-token names and regex restored."""
    tokenizer = SimpleTokenizer()
    for openclip_name, openai_name in [("<start_of_text>", "<|startoftext|>"), ("<end_of_text>", "<|endoftext|>")]:
        tokenizer.encoder[openai_name] = tokenizer.encoder.pop(openclip_name)
        del tokenizer.cache[openclip_name]
        tokenizer.cache[openai_name] = openai_name
    tokenizer.decoder = {v: k for k, v in tokenizer.encoder.items()}
    tokenizer.pat = regex.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        regex.IGNORECASE,
    )
    return tokenizer


CLASSES = (
    "tench goldfish great white shark tiger shark hammerhead electric ray stingray cock hen ostrich "
    "brambling goldfinch house finch junco indigo bunting robin bulbul jay magpie chickadee water ouzel kite "
    "bald eagle vulture great grey owl fire salamander axolotl bullfrog tree frog loggerhead leatherback turtle "
    "mud turtle terrapin box turtle banded gecko common iguana American chameleon whiptail agama frilled lizard "
    "golden retriever Labrador retriever German shepherd tabby cat Persian cat Siamese cat Egyptian cat "
    "airliner airship ambulance amphibian analog clock apiary espresso maker sports car fire engine pizza "
    "cheeseburger hotdog bagel pretzel strawberry orange lemon fig pineapple banana jackfruit custard apple "
    "pomegranate hay carbonara chocolate sauce dough meat loaf potpie burrito red wine espresso cup eggnog "
    "alp bubble cliff coral reef geyser lakeside promontory sandbar seashore valley volcano ballplayer groom "
    "scuba diver rapeseed daisy yellow lady's slipper corn acorn hip buckeye coral fungus agaric gyromitra "
    "stinkhorn mushroom earthstar hen-of-the-woods bolete ear toilet tissue T-shirt St. Bernard jack-o'-lantern"
).split(" ")
TEMPLATES = [
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a pixelated photo of the {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "itap of a {}.",
    "a origami {}.",
    "the toy {}.",
    "a low resolution photo of a {}.",
    "{}",
    "A PHOTO OF A {}!",
    "This is a photo of a {}, a type of pet.",
    "a satellite photo of {}.",
    "a centered photo of a {}",
]
WORDS = (
    "the a an of in on at with and or but dog cat man woman child people group street city beach mountain "
    "river sky tree car bus train plane bike table chair food plate cup bowl kitchen room window door wall "
    "red blue green yellow black white small large old young happy tall standing sitting walking running "
    "holding looking playing eating riding next to near under over front behind during sunset night snow rain "
    "photograph picture image close-up view scene background field park road bridge building house boat water "
    "two three several many some very really quite beautiful colorful dark bright wooden metal glass plastic "
    "isn't don't can't won't it's we're they've I'm you'll he'd she's o'clock rock'n'roll e-mail well-known"
).split()
ACCENTED = (
    "café naïve résumé façade jalapeño crème brûlée São Paulo Zürich Ærøskøbing Łódź Dvořák smørrebrød "
    "Gdańsk Eyjafjallajökull piñata über coöperate Ñandú Øresund Ångström garçon señor mañana fiancée "
    "İstanbul ıspanak straße STRASSE ΣΟΦΟΣ σοφός ﬁnance ﬂow ﬀ ＬＯＵＤ　ＮＯＩＳＥＳ ｆｕｌｌｗｉｄｔｈ "
    "e\u0301 a\u0308 n\u0303o Å K \u212b \u212a \u017ftop 'ſ ǅemal ǈ ẞ ΐ ﬃ ²³ ½ Ⅻ ⅷ ٣٤ ०१२ ๕ 〇"
).split(" ")
SCRIPT_PHRASES = [
    "一只猫坐在桌子上",
    "北京烤鸭很好吃。",
    "這是一張照片",
    "猫がテーブルの上に座っている",
    "カタカナとひらがな",
    "고양이가 탁자 위에 앉아 있다",
    "한국어 텍스트입니다",
    "القطة تجلس على الطاولة",
    "مرحبا بالعالم!",
    "החתול יושב על השולחן",
    "बिल्ली मेज पर बैठी है",
    "नमस्ते दुनिया",
    "বিড়াল টেবিলের উপর বসে আছে",
    "பூனை மேசையில் அமர்ந்திருக்கிறது",
    "పిల్లి బల్ల మీద కూర్చుంది",
    "ಬೆಕ್ಕು ಮೇಜಿನ ಮೇಲೆ ಕುಳಿತಿದೆ",
    "പൂച്ച മേശപ്പുറത്ത്",
    "ਬਿੱਲੀ ਮੇਜ਼ ਉੱਤੇ ਬੈਠੀ ਹੈ",
    "બિલાડી ટેબલ પર બેઠી છે",
    "แมวนั่งอยู่บนโต๊ะ",
    "ສະບາຍດີ",
    "ឆ្មាអង្គុយលើតុ",
    "ကြောင်သည် စားပွဲပေါ်တွင်",
    "Кошка сидит на столе",
    "Привет, мир!",
    "Γάτα κάθεται στο τραπέζι",
    "Կատուն նստած է սեղանին",
    "კატა ზის მაგიდაზე",
    "ድመቷ በጠረጴዛው ላይ ተቀምጣለች",
    "བོད་ཡིག",
    "ᠮᠣᠩᠭᠣᠯ",
    "Mèo ngồi trên bàn",
    "Kedi masanın üstünde oturuyor",
    "Kot siedzi na stole",
    "Ĉu vi parolas Esperanton?",
    "ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ",
    "ⵜⴰⵎⴰⵣⵉⵖⵜ",
    "ꦧꦱꦗꦮ",
    "ᓀᐦᐃᔭᐍᐏᐣ",
    "𐌰𐌱𐌲 gothic",
    "𓀀𓀁 hieroglyphs",
    "Ṁàñÿ ḋíàçŕïẗíçš",
]
SCRIPT_RANGES = [
    (0x0400, 0x04FF),
    (0x0370, 0x03FF),
    (0x0590, 0x05FF),
    (0x0600, 0x06FF),
    (0x0900, 0x097F),
    (0x0980, 0x09FF),
    (0x0E00, 0x0E7F),
    (0x10A0, 0x10FF),
    (0x1100, 0x11FF),
    (0x3040, 0x30FF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7AF),
    (0x1200, 0x137F),
    (0x0F00, 0x0FFF),
    (0x1780, 0x17FF),
    (0x0530, 0x058F),
    (0x0B80, 0x0BFF),
    (0x20000, 0x2A6DF),
]
EMOJI = [
    "😀",
    "😂",
    "🥲",
    "👍",
    "👍🏽",
    "👩\u200d💻",
    "👨\u200d👩\u200d👧\u200d👦",
    "🏳️\u200d🌈",
    "🇺🇸",
    "🇯🇵",
    "❤️",
    "✨",
    "🔥",
    "🐱",
    "🐶",
    "🍕",
    "🚀",
    "☕",
    "⚽",
    "🎉",
    "🤖",
    "🧑🏿\u200d🚀",
    "#️⃣",
    "1️⃣",
    "©️",
    "™",
    "↔️",
    "🫠",
    "🪿",
]
ENTITIES = [
    "&amp;",
    "&lt;",
    "&gt;",
    "&quot;",
    "&#39;",
    "&apos;",
    "&nbsp;",
    "&eacute;",
    "&Eacute;",
    "&EACUTE;",
    "&copy;",
    "&hellip;",
    "&mdash;",
    "&ndash;",
    "&rsquo;",
    "&ldquo;",
    "&AMP;",
    "&LT;",
    "&#8217;",
    "&#x2019;",
    "&#X2019;",
    "&#128512;",
    "&#x1F600;",
    "&amp;amp;",
    "&amp;amp;amp;",
    "&amp;lt;",
    "&amp",
    "&lt",
    "&copy",
    "&not",
    "&#0;",
    "&#x110000;",
    "&#55296;",
    "&#xD800;",
    "&#65;",
    "&#x41;",
    "&#150;",
    "&#x80;",
    "&zwnj;",
    "&shy;",
    "&lt;|endoftext|&gt;",
    "&bogus;",
    "&;",
    "&#;",
    "&#x;",
    "&frac12;",
    "&alpha;",
    "&Sigma;",
    "&micro;",
]
EDGE_CASES = [
    "",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    " \t\n\r\x0b\x0c ",
    "\u3000",
    "\xa0",
    "\u2028\u2029",
    "\x85",
    "\x1c\x1d\x1e\x1f",
    "a\x1cb",
    "a\x0bb",
    "a\x0cb",
    "a\x00b",
    "\x00",
    "\x07bell",
    "\x7f",
    "\x1b[31mred\x1b[0m",
    "\x1b[1;32mok",
    "\x80\x81\x9f",
    "caf\x82",
    "\ud800",
    "a\udfffb",
    "\ud83d\ude00",
    "\ufeffbom",
    "\u200b",
    "zero\u200bwidth",
    "\u200djoiner",
    "\u200e\u200fmarks",
    "\u0301",
    "\u0301\u0302\u0303",
    "x\u0301\u0302",
    "\ufffd",
    "\uffff",
    "\U0010ffff",
    "\U000e0001tag",
    "\ue000private",
    "<|endoftext|>",
    "<|startoftext|>",
    "<|startoftext|>a<|endoftext|>",
    "<|ENDOFTEXT|>",
    "<|EndOfText|>",
    "<|endoftext|",
    "<endoftext>",
    "<start_of_text>",
    "<end_of_text>",
    "<|ſtartoftext|>",
    "'s",
    "'",
    "''",
    "'ſ",
    "'S",
    "’s",
    "it’s",
    "“quoted”",
    "don't",
    "DON'T",
    "y'all'd've",
    "'''",
    "'re're're",
    "123",
    "1 2 3",
    "١٢٣",
    "٣",
    "²",
    "½",
    "Ⅻ",
    "3.14159",
    "-0.5e-10",
    "1,000,000",
    "ſ",
    "ß",
    "ẞ",
    "İ",
    "ı",
    "K",
    "Å",
    "ǅ",
    "ΣΑΣ",
    "ﬁ",
    "ﬃ",
    "Ａ",
    "ａｂｃ",
    "Ã©",
    "Ã¨Ã©",
    "cafÃ©",
    "â€œhelloâ€\x9d",
    "âœ” No problems",
    "voilÃ le travail",
    "sÃ³",
    "Ã\xa0",
    "&macr;\\_(ã\x83\x84)_/&macr;",
    "L&#x27;oreal",
    "this&not that",
    "<b>bold &amp; brave</b>",
    "a<b\n&amp;",
    "&amp;\n<",
    "<\n&amp;",
    "x < y &amp; y > z",
    "</w>",
    "a</w>b",
    "w>",
    "<",
    ">",
    "&",
    "&&&",
    "#",
    "@@",
    "...",
    "!!!???",
    "--",
    "__init__",
    "C++",
    "C#",
    "a" * 100,
    "ab" * 200,
    "😀" * 50,
    "a " * 100,
    "\u0301" * 30,
    "1" * 80,
    ". " * 60,
]


def pseudo_word(rng: random.Random) -> str:
    """A made-up word (several BPE tokens), so the corpus is not all single-token words."""
    syllables = ["ka", "zo", "pli", "tran", "quo", "vex", "um", "ry", "schl", "ght", "ae", "oo", "ix", "nth"]
    word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 5)))
    return word.capitalize() if rng.random() < 0.2 else word


def sentence(rng: random.Random, n_words: int) -> str:
    words = []
    for _ in range(n_words):
        r = rng.random()
        if r < 0.65:
            words.append(rng.choice(WORDS))
        elif r < 0.8:
            words.append(pseudo_word(rng))
        elif r < 0.88:
            words.append(rng.choice(ACCENTED))
        elif r < 0.93:
            words.append(str(rng.randint(0, 10 ** rng.randint(1, 7))))
        else:
            words.append(rng.choice(CLASSES))
    text = " ".join(words)
    case = rng.random()
    if case < 0.15:
        text = text.upper()
    elif case < 0.4:
        text = text[:1].upper() + text[1:]
    elif case < 0.5:
        text = "".join(c.upper() if rng.random() < 0.5 else c for c in text)
    return text + rng.choice(["", ".", "!", "?", " ...", ",", ";", ":)"])


def random_code_points(rng: random.Random, n: int) -> str:
    """Code points from anywhere: all planes (mostly unassigned), the BMP, or the script blocks above."""
    mode = rng.randrange(3)
    chars = []
    for _ in range(n):
        if mode == 0:
            cp = rng.randint(0, 0x10FFFF)
        elif mode == 1:
            cp = rng.randint(0, 0xFFFF)
        else:
            lo, hi = rng.choice(SCRIPT_RANGES)
            cp = rng.randint(lo, hi)
        chars.append(chr(cp))
    if rng.random() < 0.5:  # spaces make several pieces
        chars = [c if rng.random() > 0.2 else " " for c in chars]
    return "".join(chars)


def corpus(rng: random.Random) -> list[str]:
    texts = list(EDGE_CASES)
    texts += [t.format(c) for t in TEMPLATES for c in rng.sample(CLASSES, 25)]  # prompts
    texts += [sentence(rng, rng.randint(3, 25)) for _ in range(1000)]  # captions and sentences
    numbers = [
        lambda: str(rng.randint(-(10**12), 10**12)),
        lambda: f"{rng.uniform(-1e4, 1e4):.{rng.randint(0, 6)}f}",
        lambda: f"{rng.randint(1, 28)}/{rng.randint(1, 12)}/{rng.randint(1900, 2100)}",
        lambda: f"${rng.randint(0, 9999)}.{rng.randint(0, 99):02d}",
        lambda: f"{rng.randint(1, 999):,} {rng.choice(['km', 'kg', '%', 'px', '°C', 'GHz', 'x'])}",
        lambda: f"{rng.randint(1, 99)}{rng.choice(['st', 'nd', 'rd', 'th'])} place, {rng.random():.3e}",
        lambda: f"+1 ({rng.randint(100, 999)}) {rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
    ]
    texts += [rng.choice(numbers)() for _ in range(350)]
    urls = [
        lambda: f"https://www.{pseudo_word(rng).lower()}.com/{pseudo_word(rng)}?id={rng.randint(0, 9999)}&q=cat+dog",
        lambda: f"http://example.org/path/to/image_{rng.randint(0, 999)}.JPG#frag",
        lambda: f"{pseudo_word(rng).lower()}.{pseudo_word(rng).lower()}@mail.example.co.uk",
        lambda: f"see {pseudo_word(rng).lower()}.io/a-b_c~d %20 %E2%9C%94 www.x.y",
        lambda: "def f(x): return x**2 + {'a': [1, 2]}  # code",
        lambda: f"C:\\Users\\{pseudo_word(rng)}\\Pictures\\IMG_{rng.randint(1000, 9999)}.png",
        lambda: f"@user{rng.randint(0, 99)} #{pseudo_word(rng)} #CLIP RT: {rng.choice(WORDS)}!!!",
    ]
    texts += [rng.choice(urls)() for _ in range(350)]
    texts += [  # HTML entities, alone and in text, with and without tags
        rng.choice(["", "a ", "Tom ", "<p>", "x<"])
        + rng.choice(ENTITIES)
        + rng.choice(["", " b", "Jerry", "</p>"])
        + (" " + rng.choice(ENTITIES) if rng.random() < 0.4 else "")
        for _ in range(450)
    ]
    texts += [  # mixed case and contractions
        "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in sentence(rng, rng.randint(2, 8)))
        for _ in range(250)
    ]
    texts += [" ".join(rng.choice(ACCENTED) for _ in range(rng.randint(1, 6))) for _ in range(350)]
    texts += [  # emoji, alone, repeated, in text
        " ".join(rng.choice(EMOJI) * rng.randint(1, 3) + rng.choice(["", " ", rng.choice(WORDS)]) for _ in range(4))
        for _ in range(300)
    ]
    texts += [rng.choice(SCRIPT_PHRASES) + rng.choice(["", " ", " 123", "!", " photo"]) for _ in range(300)]
    texts += [" ".join(rng.sample(SCRIPT_PHRASES, 3)) for _ in range(150)]
    texts += [random_code_points(rng, rng.randint(1, 40)) for _ in range(700)]
    whitespace = [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\xa0", "\u2009", "\x1c", "\x0b", "\u2028", "\x85", ""]
    texts += [  # odd whitespace and controls between words
        "".join(rng.choice(whitespace) + rng.choice(WORDS) for _ in range(rng.randint(1, 6))) + rng.choice(whitespace)
        for _ in range(300)
    ]
    texts += [  # long texts, up to 10,000 characters
        " ".join(sentence(rng, 20) for _ in range(rng.randint(5, 60)))[: rng.choice([300, 1000, 3000, 10000])]
        for _ in range(25)
    ]
    texts += [random_code_points(rng, rng.choice([500, 2000, 10000])) for _ in range(5)]
    texts += ["x" * 10000, "a photo of a cat. " * 555, "&amp;" * 2000]
    return texts


def main() -> None:
    rng = random.Random(SEED)
    tokenizer = openai_original()
    texts = corpus(rng)
    ids = [tokenizer.encode(text) for text in texts]
    decoded = [tokenizer.decode(row) for row in ids]
    special = [tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]]
    random_ids = [
        [rng.randrange(len(tokenizer.encoder)) for _ in range(rng.randint(1, 20))]
        + rng.sample(special, rng.randint(0, 2))
        for _ in range(300)
    ]
    random_ids += [[rng.randrange(256, 512) for _ in range(rng.randint(1, 8))] for _ in range(100)]  # byte-level runs
    fixture = {
        "about": "ids (without start/end tokens) and decodes from OpenAI's original CLIP SimpleTokenizer; "
        "made by scripts/make_tokenizer_fixtures.py",
        "seed": SEED,
        "open_clip_version": version("open_clip_torch"),
        "ftfy_version": version("ftfy"),
        "texts": texts,
        "ids": ids,
        "decoded": decoded,
        "random_ids": random_ids,
        "random_ids_decoded": [tokenizer.decode(row) for row in random_ids],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(fixture, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    OUT.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))  # mtime=0: same inputs, same bytes
    print(f"{len(texts)} texts, {sum(map(len, ids))} ids -> {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
