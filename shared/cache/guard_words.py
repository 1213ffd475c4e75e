"""The near-miss guard's vocabulary: units, number words, negations, opposites and the words that name nothing.

Pure data, read by `shared.cache.guard`; the module docstring there explains each rule these lists serve.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


UNITS = {
    **dict.fromkeys(["%", "percent", "pct", "per cent"], "%"),
    **dict.fromkeys(["$", "usd", "dollar", "dollars", "bucks"], "usd"),
    **dict.fromkeys(["€", "eur", "euro", "euros"], "eur"),
    **dict.fromkeys(["£", "gbp", "sterling"], "gbp"),
    **dict.fromkeys(["¥", "jpy", "yen"], "jpy"),
    **dict.fromkeys(["km", "kms", "kilometer", "kilometers", "kilometre", "kilometres"], "km"),
    **dict.fromkeys(["m", "meter", "meters", "metre", "metres"], "m"),
    **dict.fromkeys(["cm", "centimeter", "centimeters", "centimetre", "centimetres"], "cm"),
    **dict.fromkeys(["mm", "millimeter", "millimeters", "millimetre", "millimetres"], "mm"),
    **dict.fromkeys(["mi", "mile", "miles"], "mi"),
    **dict.fromkeys(["ft", "foot", "feet"], "ft"),
    **dict.fromkeys(["inch", "inches"], "in"),
    **dict.fromkeys(["yd", "yard", "yards"], "yd"),
    **dict.fromkeys(["kg", "kgs", "kilo", "kilos", "kilogram", "kilograms"], "kg"),
    **dict.fromkeys(["g", "gram", "grams", "gr"], "g"),
    **dict.fromkeys(["mg", "milligram", "milligrams"], "mg"),
    **dict.fromkeys(["lb", "lbs", "pound", "pounds"], "lb"),
    **dict.fromkeys(["oz", "ounce", "ounces"], "oz"),
    **dict.fromkeys(["l", "liter", "liters", "litre", "litres"], "l"),
    **dict.fromkeys(["ml", "milliliter", "milliliters", "millilitre", "millilitres"], "ml"),
    **dict.fromkeys(["cup", "cups"], "cup"),
    **dict.fromkeys(["tbsp", "tablespoon", "tablespoons"], "tbsp"),
    **dict.fromkeys(["tsp", "teaspoon", "teaspoons"], "tsp"),
    **dict.fromkeys(["gal", "gallon", "gallons"], "gal"),
    **dict.fromkeys(["°c", "celsius", "centigrade"], "°c"),
    **dict.fromkeys(["°f", "fahrenheit"], "°f"),
    **dict.fromkeys(["°", "degree", "degrees", "deg"], "°"),
    **dict.fromkeys(["ms", "millisecond", "milliseconds"], "ms"),
    **dict.fromkeys(["s", "sec", "secs", "second", "seconds"], "s"),
    **dict.fromkeys(["min", "mins", "minute", "minutes"], "min"),
    **dict.fromkeys(["h", "hr", "hrs", "hour", "hours"], "h"),
    **dict.fromkeys(["day", "days"], "day"),
    **dict.fromkeys(["week", "weeks", "wk", "wks"], "week"),
    **dict.fromkeys(["month", "months", "mo"], "month"),
    **dict.fromkeys(["year", "years", "yr", "yrs"], "year"),
    **dict.fromkeys(["decade", "decades"], "decade"),
    **dict.fromkeys(["kb", "kilobyte", "kilobytes"], "kb"),
    **dict.fromkeys(["mb", "megabyte", "megabytes"], "mb"),
    **dict.fromkeys(["gb", "gigabyte", "gigabytes"], "gb"),
    **dict.fromkeys(["tb", "terabyte", "terabytes"], "tb"),
    **dict.fromkeys(["mph"], "mph"),
    **dict.fromkeys(["kph", "kmh", "km/h"], "km/h"),
    **dict.fromkeys(["am", "a.m."], "am"),
    **dict.fromkeys(["pm", "p.m."], "pm"),
    **dict.fromkeys(["st", "nd", "rd", "th"], "th"),
    **dict.fromkeys(["cal", "calorie", "calories", "kcal"], "kcal"),
}
SMALL = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    # Multiplicative adverbs ask a different question than the bare verb ("reset it twice"); "once" is left
    # out because it mostly means "after" ("once installed, ...").
    "twice": 2,
    "thrice": 3,
}
MULTIPLIERS = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}
NUMBER_WORDS = frozenset([*SMALL, *MULTIPLIERS, "dozen"])
ORDINALS = {
    "first": 1,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
    "twentieth": 20,
    "hundredth": 100,
}
NEGATIONS = _words(
    """
    not no never none nor neither nobody nothing nowhere without except excluding cannot non
    dont doesnt didnt isnt arent wasnt werent cant wont shouldnt wouldnt couldnt hasnt havent hadnt
    """
)
# Opposites: a prompt that swaps one for the other asks the opposite question. Kept to unambiguous pairs
# ("before"/"after" is an order, handled by the relation rule; "new"/"old" and "in"/"out" are too common).
OPPOSITES = [
    ("on", "off"),
    ("enable", "disable"),
    ("enabled", "disabled"),
    ("increase", "decrease"),
    ("increase", "reduce"),
    ("raise", "lower"),
    ("higher", "lower"),
    ("high", "low"),
    ("upgrade", "downgrade"),
    ("add", "remove"),
    ("install", "uninstall"),
    ("encrypt", "decrypt"),
    ("import", "export"),
    ("upload", "download"),
    ("buy", "sell"),
    ("open", "close"),
    ("start", "stop"),
    ("lock", "unlock"),
    ("show", "hide"),
    ("allow", "block"),
    ("allow", "deny"),
    ("accept", "reject"),
    ("include", "exclude"),
    ("maximum", "minimum"),
    ("max", "min"),
    ("maximize", "minimize"),
    ("more", "less"),
    ("most", "least"),
    ("best", "worst"),
    ("hot", "cold"),
    ("fast", "slow"),
    ("faster", "slower"),
    ("cheap", "expensive"),
    ("cheapest", "expensive"),
    ("first", "last"),
    ("left", "right"),
    ("up", "down"),
    ("above", "below"),
    ("inside", "outside"),
    ("win", "lose"),
    ("gain", "lose"),
    ("positive", "negative"),
    ("true", "false"),
    ("legal", "illegal"),
    ("safe", "dangerous"),
    ("possible", "impossible"),
    ("always", "never"),
    ("connect", "disconnect"),
    ("login", "logout"),
    ("incoming", "outgoing"),
    ("inbound", "outbound"),
    ("input", "output"),
    ("credit", "debit"),
    ("deposit", "withdraw"),
    ("borrow", "lend"),
    ("ascending", "descending"),
    ("north", "south"),
    ("east", "west"),
    ("advantage", "disadvantage"),
    ("pro", "con"),
    ("benefit", "risk"),
    ("benefit", "drawback"),
    ("agree", "disagree"),
    ("like", "dislike"),
    ("push", "pull"),
    ("send", "receive"),
    ("full", "empty"),
    ("wet", "dry"),
    ("overweight", "underweight"),
    ("overpaid", "underpaid"),
]
OPPOSITE: dict[str, frozenset[str]] = {}
for _a, _b in OPPOSITES:
    OPPOSITE[_a] = OPPOSITE.get(_a, frozenset()) | {_b}
    OPPOSITE[_b] = OPPOSITE.get(_b, frozenset()) | {_a}
# "pair" / "unpair", "advantage" / "disadvantage", "activate" / "deactivate": an opposite made by a prefix.
NEGATING_PREFIXES = ("un", "dis", "de", "non")

FUNCTION_WORDS = _words(
    """
    a an the this that these those my your our their his her its me you we they he she it i us them
    what which who whom whose when where why how whats whos hows
    is are was were be been being am do does did done doing have has had having can could should would will
    shall may might must
    and or but if then so than as of at by for with about against between into through during before after
    above below to from up down in out on off over under again further once here there all any both each few
    more most other some such only own same too very just also there's it's i'm i've i'd i'll
    """
)
# Words that start a prompt without naming anything: capitalised only because they come first.
SENTENCE_OPENERS = FUNCTION_WORDS | _words(
    """
    hi hello hey dear thanks thank sorry ok okay yes no also now so well actually quick question urgent note
    please can could would should will did was were has have had let lets let's whats what's how's where's who's
    is there isn't aren't don't doesn't can't won't didn't shouldn't not never my our your im i'm
    as in on at for from to by with after before during while when if since because although though
    one some many much every each all most few several other another such none neither either any anyone
    best good top tip tips ways steps ideas examples recipe difference meaning definition benefits pros cons
    guide tutorial overview summary instructions
    explain describe tell give show list write create make find help convert translate summarize summarise
    compare calculate recommend suggest generate plan book check get set use need want name define outline
    draft rewrite rephrase paraphrase improve analyze analyse identify provide share draw design build
    implement refactor optimize optimise review proofread correct edit format schedule remind search look
    teach walk guide brainstorm estimate predict classify extract parse count solve prove simplify evaluate
    enumerate answer reply assume imagine pretend act continue complete finish produce compose transform
    replace rename move copy insert configure deploy execute test verify validate contrast clarify elaborate
    discuss justify critique rate rank advise assist support organize organise prepare compute determine
    reset change update delete remove add install uninstall enable disable turn open close start stop run
    send email call buy sell pay cancel return order track fix debug sort reverse merge read
    """
)
# Names often typed in lowercase (not those that are also common words: react, excel, rust, swift, chrome).
LOWERCASE_NAMES = _words(
    """
    python javascript typescript java kotlin golang ruby php perl scala haskell sql mysql postgresql postgres
    sqlite mongodb redis docker kubernetes linux ubuntu debian fedora macos android ios firefox git github npm
    pip pandas numpy vue django nginx
    usd eur gbp jpy chf cad aud cny inr
    monday tuesday wednesday thursday friday saturday sunday
    january february april june july august september october november december
    """
)
# Capitalised or all-caps words that name nothing.
# Names written two ways that are one thing: a name on one side is present when its alias is on the other. Only
# true equivalents (a wrong entry could serve an answer about something else); acronyms spelled out in the other
# prompt ("IRA" / "individual retirement account") need no entry, the guard reads the initials.
ALIASES: dict[str, frozenset[str]] = {}
for _group in (
    "javascript js",
    "typescript ts",
    "python py",
    "macos mac osx",
    "kubernetes k8s",
    "postgresql postgres",
    "us usa america american",
    "uk britain british",
    "eu european",
    "pc computer",
    "ac aircon",
):
    _names = _group.split()
    for _name in _names:
        ALIASES[_name] = frozenset(_names) - {_name}
NOT_NAMES = frozenset(["i", "i'm", "i've", "i'd", "i'll", "ok", "okay", "asap", "fyi", "faq", "pls", "tl;dr"])
DETERMINERS = _words("a an the my your our their his her its this that these those some")
SYMMETRIC = frozenset(["and", "or", "&", "and/or", ","])
