"""Build the built-in parallel task sets from CLDR (via babel) and our own few-shot templates.

Run: python scripts/build_builtin_data.py   (writes src/tl_multineuron/data/*.jsonl)

Sources: country names, capital cities (time-zone exemplar cities), currency names and language
names are CLDR's localized data. Traps handled (see shared notes): exemplar cities fall back to
the tz id when a locale has no translation (we require an explicit translation for locales
whose script is not Latin), and renamed tz ids (Europe/Kiev) are skipped unless English has
an explicit city name. Month/weekday names are not used (babel's stand-alone names can be wrong).
"""

from __future__ import annotations

import datetime
import json
import random
from pathlib import Path

import babel
from babel import Locale
from babel.dates import get_timezone_location
from babel.numbers import get_territory_currencies

LANGS = ["en", "de", "fr", "es", "ru", "zh", "ja", "ar"]
NON_LATIN = {"ru", "zh", "ja", "ar"}
NO_SPACE = {"zh", "ja"}  # answer directly after a full-width colon
OUT = Path(__file__).resolve().parents[1] / "src" / "tl_multineuron" / "data"
LOC = {x: Locale.parse(x) for x in LANGS}

CAPITAL_TZ = {
    "FR": "Europe/Paris",
    "DE": "Europe/Berlin",
    "IT": "Europe/Rome",
    "ES": "Europe/Madrid",
    "PT": "Europe/Lisbon",
    "GB": "Europe/London",
    "IE": "Europe/Dublin",
    "NL": "Europe/Amsterdam",
    "BE": "Europe/Brussels",
    "LU": "Europe/Luxembourg",
    "AT": "Europe/Vienna",
    "PL": "Europe/Warsaw",
    "CZ": "Europe/Prague",
    "SK": "Europe/Bratislava",
    "HU": "Europe/Budapest",
    "RO": "Europe/Bucharest",
    "BG": "Europe/Sofia",
    "GR": "Europe/Athens",
    "RS": "Europe/Belgrade",
    "HR": "Europe/Zagreb",
    "SI": "Europe/Ljubljana",
    "BA": "Europe/Sarajevo",
    "ME": "Europe/Podgorica",
    "MK": "Europe/Skopje",
    "AL": "Europe/Tirane",
    "DK": "Europe/Copenhagen",
    "NO": "Europe/Oslo",
    "SE": "Europe/Stockholm",
    "FI": "Europe/Helsinki",
    "IS": "Atlantic/Reykjavik",
    "EE": "Europe/Tallinn",
    "LV": "Europe/Riga",
    "LT": "Europe/Vilnius",
    "BY": "Europe/Minsk",
    "UA": "Europe/Kiev",
    "RU": "Europe/Moscow",
    "MD": "Europe/Chisinau",
    "MC": "Europe/Monaco",
    "SM": "Europe/San_Marino",
    "CY": "Asia/Nicosia",
    "GE": "Asia/Tbilisi",
    "AM": "Asia/Yerevan",
    "AZ": "Asia/Baku",
    "JP": "Asia/Tokyo",
    "KR": "Asia/Seoul",
    "KP": "Asia/Pyongyang",
    "TW": "Asia/Taipei",
    "MN": "Asia/Ulaanbaatar",
    "TH": "Asia/Bangkok",
    "KH": "Asia/Phnom_Penh",
    "LA": "Asia/Vientiane",
    "MY": "Asia/Kuala_Lumpur",
    "SG": "Asia/Singapore",
    "ID": "Asia/Jakarta",
    "PH": "Asia/Manila",
    "TL": "Asia/Dili",
    "BD": "Asia/Dhaka",
    "NP": "Asia/Kathmandu",
    "BT": "Asia/Thimphu",
    "AF": "Asia/Kabul",
    "IR": "Asia/Tehran",
    "IQ": "Asia/Baghdad",
    "SY": "Asia/Damascus",
    "LB": "Asia/Beirut",
    "JO": "Asia/Amman",
    "SA": "Asia/Riyadh",
    "OM": "Asia/Muscat",
    "UZ": "Asia/Tashkent",
    "TM": "Asia/Ashgabat",
    "TJ": "Asia/Dushanbe",
    "KG": "Asia/Bishkek",
    "EG": "Africa/Cairo",
    "LY": "Africa/Tripoli",
    "TN": "Africa/Tunis",
    "DZ": "Africa/Algiers",
    "SD": "Africa/Khartoum",
    "SS": "Africa/Juba",
    "ET": "Africa/Addis_Ababa",
    "ER": "Africa/Asmera",
    "DJ": "Africa/Djibouti",
    "SO": "Africa/Mogadishu",
    "KE": "Africa/Nairobi",
    "UG": "Africa/Kampala",
    "RW": "Africa/Kigali",
    "CD": "Africa/Kinshasa",
    "CG": "Africa/Brazzaville",
    "GA": "Africa/Libreville",
    "CF": "Africa/Bangui",
    "TD": "Africa/Ndjamena",
    "NE": "Africa/Niamey",
    "BJ": "Africa/Porto-Novo",
    "TG": "Africa/Lome",
    "GH": "Africa/Accra",
    "BF": "Africa/Ouagadougou",
    "ML": "Africa/Bamako",
    "SN": "Africa/Dakar",
    "GM": "Africa/Banjul",
    "GW": "Africa/Bissau",
    "GN": "Africa/Conakry",
    "SL": "Africa/Freetown",
    "LR": "Africa/Monrovia",
    "MR": "Africa/Nouakchott",
    "AO": "Africa/Luanda",
    "ZM": "Africa/Lusaka",
    "ZW": "Africa/Harare",
    "MZ": "Africa/Maputo",
    "BW": "Africa/Gaborone",
    "NA": "Africa/Windhoek",
    "LS": "Africa/Maseru",
    "SZ": "Africa/Mbabane",
    "MG": "Indian/Antananarivo",
    "GQ": "Africa/Malabo",
    "ST": "Africa/Sao_Tome",
    "MX": "America/Mexico_City",
    "HN": "America/Tegucigalpa",
    "NI": "America/Managua",
    "CU": "America/Havana",
    "HT": "America/Port-au-Prince",
    "DO": "America/Santo_Domingo",
    "BS": "America/Nassau",
    "TT": "America/Port_of_Spain",
    "CO": "America/Bogota",
    "VE": "America/Caracas",
    "PE": "America/Lima",
    "BO": "America/La_Paz",
    "CL": "America/Santiago",
    "AR": "America/Buenos_Aires",
    "UY": "America/Montevideo",
    "PY": "America/Asuncion",
    "SR": "America/Paramaribo",
    "PG": "Pacific/Port_Moresby",
    "WS": "Pacific/Apia",
}
RENAMED_TZ = {"Europe/Kiev", "Africa/Asmera"}


def _explicit_city(lang: str, tz: str) -> str | None:
    data = LOC[lang].time_zones.get(tz)
    return data.get("city") if data else None


def capital(lang: str, tz: str) -> str | None:
    explicit = _explicit_city(lang, tz)
    if explicit:
        return explicit
    if lang in NON_LATIN or tz in RENAMED_TZ:
        return None  # fallback to the tz id would be wrong here
    city = get_timezone_location(tz, locale=lang, return_city=True)
    if "/" in city or "_" in city:
        # babel fell back to (part of) the tz id, e.g. "Argentina/Buenos Aires" for
        # America/Buenos_Aires: the city is the id's last component, as Latin-script locales
        # write it
        city = tz.rsplit("/", 1)[-1].replace("_", " ")
    return city


def country(lang: str, cc: str) -> str | None:
    return LOC[lang].territories.get(cc)


def cont(lang: str, text: str) -> str:
    """The answer as the continuation the prompt expects."""
    return text if lang in NO_SPACE else " " + text


def write(task: str, languages: list[str], records: list[dict]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{task}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            r = {
                "id": r["id"],
                "task": task,
                "prompts": {x: r["prompts"][x] for x in languages},
                "answers": {x: r["answers"][x] for x in languages},
            }
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{task}: {len(records)} items, languages {languages} -> {path.name}")


# -- fact probing: country -> capital ------------------------------------------------------
FACT_SHOTS = ["JP", "EG", "PE"]


def build_facts() -> None:
    table = {}
    for cc, tz in CAPITAL_TZ.items():
        row = {x: (country(x, cc), capital(x, tz)) for x in LANGS}
        if all(c and k for c, k in row.values()):
            table[cc] = row
    for s in FACT_SHOTS:
        assert s in table, s
    recs = []
    for cc, row in table.items():
        if cc in FACT_SHOTS:
            continue
        prompts, answers = {}, {}
        for x in LANGS:
            sep = "：" if x in NO_SPACE else ": "
            shots = "".join(f"{table[s][x][0]}{sep}{table[s][x][1]}\n" for s in FACT_SHOTS)
            prompts[x] = shots + f"{row[x][0]}{sep.rstrip()}"
            answers[x] = cont(x, row[x][1]) if x in NO_SPACE else " " + row[x][1]
        recs.append({"id": f"capital-{cc}", "prompts": prompts, "answers": answers})
    write("facts", LANGS, recs)


# -- question answering: country -> currency ------------------------------------------------
QA_TEMPLATES = {
    "en": ("Question: What is the currency of {c}?\nAnswer:", ""),
    "de": ("Frage: Was ist die Währung von {c}?\nAntwort:", ""),
    "fr": ("Question : Quelle est la monnaie de ce pays : {c} ?\nRéponse :", ""),
    "es": ("Pregunta: ¿Cuál es la moneda de {c}?\nRespuesta:", ""),
    "ru": ("Вопрос: Какая валюта в стране {c}?\nОтвет:", ""),
    "zh": ("问题：{c}的货币是什么？\n答案：", ""),
    "ja": ("質問：{c}の通貨は何ですか？\n答え：", ""),
    "ar": ("سؤال: ما هي عملة {c}؟\nالجواب:", ""),
}
QA_SHOTS_PREFERRED = ["JP", "GB", "IN", "BR", "CN", "RU", "MX", "KR"]


def build_qa() -> None:
    date = "2024-01-01"
    users: dict[str, list[str]] = {}
    ccs = [cc for cc in LOC["en"].territories if len(cc) == 2 and cc.isalpha() and cc != "ZZ"]
    cur_of = {}
    for cc in ccs:
        cur = get_territory_currencies(
            cc, start_date=datetime.date.fromisoformat(date), tender=True
        )
        if len(cur) == 1:
            cur_of[cc] = cur[0]
            users.setdefault(cur[0], []).append(cc)
    table = {}
    for cc, cur in sorted(cur_of.items()):
        if len(users[cur]) != 1:  # shared currencies (EUR, USD, XOF...) are left out
            continue
        row = {x: (country(x, cc), LOC[x].currencies.get(cur)) for x in LANGS}
        if all(c and k and k != cur for c, k in row.values()):
            table[cc] = row
    shots_cc = [cc for cc in QA_SHOTS_PREFERRED if cc in table][:3]
    recs = []
    for cc, row in table.items():
        if cc in shots_cc:
            continue
        prompts, answers = {}, {}
        for x in LANGS:
            tpl = QA_TEMPLATES[x][0]
            shots = "".join(
                tpl.format(c=table[s][x][0]) + cont(x, table[s][x][1]) + "\n\n" for s in shots_cc
            )
            prompts[x] = shots + tpl.format(c=row[x][0])
            answers[x] = cont(x, row[x][1])
        recs.append({"id": f"currency-{cc}", "prompts": prompts, "answers": answers})
    write("qa", LANGS, recs)


# -- translation of language names, en->xx and xx->en ----------------------------------------
TRANS_SHOTS = ["fr", "ja", "sw"]


def build_translation() -> None:
    codes = sorted(c for c in LOC["en"].languages if len(c) == 2 and c.isalpha())
    table = {}
    for c in codes:
        row = {x: LOC[x].languages.get(c) for x in LANGS}
        if all(row.values()):
            table[c] = row
    autonym = {x: LOC[x].get_display_name(x) for x in LANGS}
    autonym = {x: a[0].upper() + a[1:] for x, a in autonym.items()}
    targets = [x for x in LANGS if x != "en"]
    items = [c for c in table if c not in TRANS_SHOTS]
    rng = random.Random(0)
    items = sorted(rng.sample(items, min(150, len(items))))
    fwd, bwd = [], []
    for c in items:
        pf, af, pb, ab = {}, {}, {}, {}
        for x in targets:
            shots_f = "".join(
                f"English: {table[s]['en']}\n{autonym[x]}: {table[s][x]}\n\n" for s in TRANS_SHOTS
            )
            shots_b = "".join(
                f"{autonym[x]}: {table[s][x]}\nEnglish: {table[s]['en']}\n\n" for s in TRANS_SHOTS
            )
            pf[x] = shots_f + f"English: {table[c]['en']}\n{autonym[x]}:"
            af[x] = " " + table[c][x]
            pb[x] = shots_b + f"{autonym[x]}: {table[c][x]}\nEnglish:"
            ab[x] = " " + table[c]["en"]
        fwd.append({"id": f"langname-{c}", "prompts": pf, "answers": af})
        bwd.append({"id": f"langname-{c}", "prompts": pb, "answers": ab})
    write("translate_en_xx", targets, fwd)
    write("translate_xx_en", targets, bwd)


# -- reasoning (NLI-style): does the hypothesis follow from the premise? ----------------------
NLI = {
    "en": (
        "Premise: The number is {a}.\nHypothesis: The number is {r} {b}.\nTrue or false? Answer:",
        ("greater than", "less than"),
        ("true", "false"),
    ),
    "de": (
        "Prämisse: Die Zahl ist {a}.\nHypothese: Die Zahl ist {r} {b}.\nWahr oder falsch? Antwort:",
        ("größer als", "kleiner als"),
        ("wahr", "falsch"),
    ),
    "fr": (
        "Prémisse : Le nombre est {a}.\nHypothèse : Le nombre est {r} {b}.\nVrai ou faux ? "
        "Réponse :",
        ("plus grand que", "plus petit que"),
        ("vrai", "faux"),
    ),
    "es": (
        "Premisa: El número es {a}.\nHipótesis: El número es {r} {b}.\n¿Verdadero o falso? "
        "Respuesta:",
        ("mayor que", "menor que"),
        ("verdadero", "falso"),
    ),
    "ru": (
        "Посылка: Число равно {a}.\nГипотеза: Число {r} {b}.\nВерно или неверно? Ответ:",
        ("больше", "меньше"),
        ("верно", "неверно"),
    ),
    "zh": (
        "前提：这个数是{a}。\n假设：这个数{r}{b}。\n对还是错？答案：",
        ("大于", "小于"),
        ("对", "错"),
    ),
    "ja": (
        "前提：その数は{a}です。\n仮説：その数は{b}{r}。\n正しいか間違いか？答え：",
        ("より大きい", "より小さい"),
        ("正しい", "間違い"),
    ),
    "ar": (
        "المقدمة: العدد هو {a}.\nالفرضية: العدد {r} {b}.\nصحيح أم خطأ؟ الجواب:",
        ("أكبر من", "أصغر من"),
        ("صحيح", "خطأ"),
    ),
}
NLI_SHOTS = [(7, 3, 0), (2, 9, 0), (15, 40, 1), (60, 12, 1)]


def nli_text(x: str, a: int, b: int, rel: int) -> tuple[str, str]:
    tpl, rels, labels = NLI[x]
    truth = a > b if rel == 0 else a < b
    return tpl.format(a=a, b=b, r=rels[rel]), cont(x, labels[0 if truth else 1])


def build_nli() -> None:
    rng = random.Random(1)
    recs, seen = [], set()
    while len(recs) < 160:
        a, b = rng.sample(range(1, 100), 2)
        rel = rng.randrange(2)
        want_true = len(recs) % 2 == 0  # balanced labels
        if ((a > b) if rel == 0 else (a < b)) != want_true or (a, b, rel) in seen:
            continue
        seen.add((a, b, rel))
        prompts, answers = {}, {}
        for x in LANGS:
            shots = "".join("".join(nli_text(x, *s)) + "\n\n" for s in NLI_SHOTS)
            p, ans = nli_text(x, a, b, rel)
            prompts[x], answers[x] = shots + p, ans
        recs.append(
            {
                "id": f"cmp-{a}-{'gt' if rel == 0 else 'lt'}-{b}",
                "prompts": prompts,
                "answers": answers,
            }
        )
    write("nli", LANGS, recs)


if __name__ == "__main__":
    print("babel", babel.__version__)
    build_facts()
    build_qa()
    build_translation()
    build_nli()
