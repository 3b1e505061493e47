"""English noun singularization with the rules and exceptions of Pattern 3.6's `pattern.en.singularize`.

The official CHAIR code singularizes every token with that function, so reproducing CHAIR's mention lists needs its
exact behaviour, oddities included: "bus" -> "bu", "glass" -> "glas", "your" -> "ymy" (the irregular "our" -> "my"
matches as a suffix), and any word that is the tail of an uninflected/uncountable word stays as it is ("ears" is the
tail of "shears"). Pattern itself is not installable on current Python, so the rule tables live here.
"""

from __future__ import annotations

import functools
import re

# Second parts that make a hyphenated compound inflect its first part ("mothers-in-law").
_PREPOSITIONS = frozenset(
    "about above across after among around at athwart before behind below beneath beside besides between betwixt "
    "beyond but by during except for from in into near of off on onto out over since till to under until unto upon "
    "with".split())

# Words returned unchanged when the (lowercased) word is a suffix of one of them.
_UNINFLECTED = frozenset(
    "bison bream breeches britches carp chassis christmas clippers cod contretemps corps debris diabetes djinn eland "
    "elk flounder gallows georgia graffiti headquarters herpes high-jinks homework innings jackanapes mackerel "
    "measles mews mumps news pincers pliers proceedings rabies salmon scissors series shears species swine swiss "
    "trout tuna whiting wildebeest".split())
_UNCOUNTABLE = frozenset(
    "advice bread butter cheese electricity equipment fruit furniture garbage gravel happiness information ketchup "
    "knowledge love luggage mathematics mayonnaise meat mustard news progress research rice sand software "
    "understanding water".split())
# "-ie" nouns: "<x>s" -> "<x>". "^pie" and "^tie" are literal in the original, so they never match.
_IE = frozenset(
    "alergie auntie beanie birdie bogie bombie collie cookie cutie doggie eyrie freebie goonie groupie hankie hippie "
    "hoagie hottie indie junkie laddie laramie lingerie meanie newbie nightie oldie ^pie pixie quickie reverie "
    "rookie softie sortie stoolie sweetie techie ^tie toughie valkyrie veggie weenie yuppie zombie".split())
# Irregular plurals, matched as suffixes of the word ("women" -> "woman", "your" -> "ymy").
_IRREGULAR = {
    "atlantes": "atlas", "atlases": "atlas", "axes": "axe", "beeves": "beef", "brethren": "brother",
    "children": "child", "corpora": "corpus", "corpuses": "corpus", "ephemerides": "ephemeris", "feet": "foot",
    "ganglia": "ganglion", "geese": "goose", "genera": "genus", "genii": "genie", "graffiti": "graffito",
    "helves": "helve", "kine": "cow", "leaves": "leaf", "loaves": "loaf", "men": "man", "mongooses": "mongoose",
    "monies": "money", "moves": "move", "mythoi": "mythos", "numena": "numen", "occipita": "occiput",
    "octopodes": "octopus", "opera": "opus", "opuses": "opus", "our": "my", "oxen": "ox", "penes": "penis",
    "penises": "penis", "people": "person", "sexes": "sex", "soliloquies": "soliloquy", "teeth": "tooth",
    "testes": "testis", "trilbys": "trilby", "turves": "turf", "zoa": "zoon",
}
# Suffix rules, first match wins (the odd ones kept: "[octop|vir]" is a character class, "^(ox)en" has no "$").
_RULES = tuple((re.compile(p), r) for p, r in (
    (r"(?i)(.)ae$", r"\1a"), (r"(?i)(.)itis$", r"\1itis"), (r"(?i)(.)eaux$", r"\1eau"),
    (r"(?i)(quiz)zes$", r"\1"), (r"(?i)(matr)ices$", r"\1ix"), (r"(?i)(ap|vert|ind)ices$", r"\1ex"),
    (r"(?i)^(ox)en", r"\1"), (r"(?i)(alias|status)es$", r"\1"), (r"(?i)([octop|vir])i$", r"\1us"),
    (r"(?i)(cris|ax|test)es$", r"\1is"), (r"(?i)(shoe)s$", r"\1"), (r"(?i)(o)es$", r"\1"),
    (r"(?i)(bus)es$", r"\1"), (r"(?i)([m|l])ice$", r"\1ouse"), (r"(?i)(x|ch|ss|sh)es$", r"\1"),
    (r"(?i)(m)ovies$", r"\1ovie"), (r"(?i)(.)ombies$", r"\1ombie"), (r"(?i)(s)eries$", r"\1eries"),
    (r"(?i)([^aeiouy]|qu)ies$", r"\1y"),
    (r"([aeo]l)ves$", r"\1f"), (r"([^d]ea)ves$", r"\1f"), (r"arves$", "arf"), (r"erves$", "erve"),
    (r"([nlw]i)ves$", r"\1fe"), (r"(?i)([lr])ves$", r"\1f"), (r"([aeo])ves$", r"\1ve"),
    (r"(?i)(sive)s$", r"\1"), (r"(?i)(tive)s$", r"\1"), (r"(?i)(hive)s$", r"\1"), (r"(?i)([^f])ves$", r"\1fe"),
    (r"(?i)(^analy)ses$", r"\1sis"),
    (r"(?i)((a)naly|(b)a|(d)iagno|(p)arenthe|(p)rogno|(s)ynop|(t)he)ses$", r"\1\2sis"),
    (r"(?i)(.)opses$", r"\1opsis"), (r"(?i)(.)yses$", r"\1ysis"), (r"(?i)(h|d|r|o|n|b|cl|p)oses$", r"\1ose"),
    (r"(?i)(fruct|gluc|galact|lact|ket|malt|rib|sacchar|cellul)ose$", r"\1ose"), (r"(?i)(.)oses$", r"\1osis"),
    (r"(?i)([ti])a$", r"\1um"), (r"(?i)(n)ews$", r"\1ews"), (r"(?i)s$", ""),
))


@functools.lru_cache(maxsize=65536)
def singularize(word: str) -> str:
    """The singular of `word` as Pattern 3.6's `singularize(word)` (default noun part of speech) returns it."""
    if "-" in word:
        parts = word.split("-")
        if len(parts) > 1 and parts[1] in _PREPOSITIONS:
            return singularize(parts[0]) + "-" + "-".join(parts[1:])
    if word.endswith("'"):
        return singularize(word[:-1]) + "'s"
    low = word.lower()
    if any(x.endswith(low) for x in _UNINFLECTED) or any(x.endswith(low) for x in _UNCOUNTABLE):
        return word
    if any(low.endswith(x + "s") for x in _IE):
        return low
    for plural_form, singular in _IRREGULAR.items():
        if low.endswith(plural_form):
            return re.sub(f"(?i){plural_form}$", singular, word)
    for pattern, replacement in _RULES:
        if pattern.search(word):
            return pattern.sub(replacement, word)  # an unmatched group substitutes '' (Pattern strips it by hand)
    return word
