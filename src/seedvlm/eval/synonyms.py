"""The 80 COCO categories and their CHAIR synonym lists (Rohrbach et al. 2018).

Source: `data/synonyms.txt` of the CHAIR authors' code (github.com/LisaAnne/Hallucination), as reproduced in the
standalone CHAIR scripts used by OPERA, VCD and lmms-eval. One entry per category, first entry = the COCO category
name; duplicate entries of the original file (e.g. "person" and "woman" listed twice) are dropped, and the lists are
lowercased ("iPhone" -> "iphone"). Typos of the original are kept on purpose ("televison", "solider", "phon",
"knive"): they are part of the protocol and harmless.

`PHRASES` holds the multi-word rules of the original `caption_to_words`: two-word COCO names that must be read as
one token before single words are looked up ("hot dog" is not a dog, "teddy bear" is not a bear), qualifiers that
would fire "person" ("baby elephant" -> elephant, "passenger train" -> train), "bow tie" -> tie,
"toilet seat" -> toilet, and phrases that are no object ("home plate", "train track"). Every multi-word synonym of the
table is added as a phrase too; of those only "dining table" was missing from the original's list, where "table"
reached the same category. Not in the table, so not detected, as in the original: "hair dryer", "blow dryer".
"""

from __future__ import annotations

# COCO category names in COCO category-id order (ids 1..90 with gaps; the order is what matters here).
COCO_CATEGORIES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": (
        "person", "girl", "boy", "man", "woman", "kid", "child", "chef", "baker", "people", "adult", "rider",
        "children", "baby", "worker", "passenger", "sister", "biker", "policeman", "cop", "officer", "lady",
        "cowboy", "bride", "groom", "male", "female", "guy", "traveler", "mother", "father", "gentleman",
        "pitcher", "player", "skier", "snowboarder", "skater", "skateboarder", "foreigner", "caller", "offender",
        "coworker", "trespasser", "patient", "politician", "soldier", "grandchild", "serviceman", "walker",
        "drinker", "doctor", "bicyclist", "thief", "buyer", "teenager", "student", "camper", "driver", "solider",
        "hunter", "shopper", "villager"),
    "bicycle": ("bicycle", "bike", "unicycle", "minibike", "trike"),
    "car": ("car", "automobile", "van", "minivan", "sedan", "suv", "hatchback", "cab", "jeep", "coupe", "taxicab",
            "limo", "taxi"),
    "motorcycle": ("motorcycle", "scooter", "motor bike", "motor cycle", "motorbike", "moped"),
    "airplane": ("airplane", "jetliner", "plane", "air plane", "monoplane", "aircraft", "jet", "airbus", "biplane",
                 "seaplane"),
    "bus": ("bus", "minibus", "trolley"),
    "train": ("train", "locomotive", "tramway", "caboose"),
    "truck": ("truck", "pickup", "lorry", "hauler", "firetruck"),
    "boat": (
        "boat", "ship", "liner", "sailboat", "motorboat", "dinghy", "powerboat", "speedboat", "canoe", "skiff",
        "yacht", "kayak", "catamaran", "pontoon", "houseboat", "vessel", "rowboat", "trawler", "ferryboat",
        "watercraft", "tugboat", "schooner", "barge", "ferry", "sailboard", "paddleboat", "lifeboat", "freighter",
        "steamboat", "riverboat", "battleship", "steamship"),
    "traffic light": ("traffic light", "street light", "traffic signal", "stop light", "streetlight", "stoplight"),
    "fire hydrant": ("fire hydrant", "hydrant"),
    "stop sign": ("stop sign",),
    "parking meter": ("parking meter",),
    "bench": ("bench", "pew"),
    "bird": (
        "bird", "ostrich", "owl", "seagull", "goose", "duck", "parakeet", "falcon", "robin", "pelican", "waterfowl",
        "heron", "hummingbird", "mallard", "finch", "pigeon", "sparrow", "seabird", "osprey", "blackbird", "fowl",
        "shorebird", "woodpecker", "egret", "chickadee", "quail", "bluebird", "kingfisher", "buzzard", "willet",
        "gull", "swan", "bluejay", "flamingo", "cormorant", "parrot", "loon", "gosling", "waterbird", "pheasant",
        "rooster", "sandpiper", "crow", "raven", "turkey", "oriole", "cowbird", "warbler", "magpie", "peacock",
        "cockatiel", "lorikeet", "puffin", "vulture", "condor", "macaw", "peafowl", "cockatoo", "songbird"),
    "cat": ("cat", "kitten", "feline", "tabby"),
    "dog": (
        "dog", "puppy", "beagle", "pup", "chihuahua", "schnauzer", "dachshund", "rottweiler", "canine", "pitbull",
        "collie", "pug", "terrier", "poodle", "labrador", "doggie", "doberman", "mutt", "doggy", "spaniel",
        "bulldog", "sheepdog", "weimaraner", "corgi", "cocker", "greyhound", "retriever", "brindle", "hound",
        "whippet", "husky"),
    "horse": ("horse", "colt", "pony", "racehorse", "stallion", "equine", "mare", "foal", "palomino", "mustang",
              "clydesdale", "bronc", "bronco"),
    "sheep": ("sheep", "lamb", "ram", "goat", "ewe"),
    "cow": ("cow", "cattle", "oxen", "ox", "calf", "holstein", "heifer", "buffalo", "bull", "zebu", "bison"),
    "elephant": ("elephant",),
    "bear": ("bear", "panda"),
    "zebra": ("zebra",),
    "giraffe": ("giraffe",),
    "backpack": ("backpack", "knapsack"),
    "umbrella": ("umbrella",),
    "handbag": ("handbag", "wallet", "purse", "briefcase"),
    "tie": ("tie", "bow", "bow tie"),
    "suitcase": ("suitcase", "suit case", "luggage"),
    "frisbee": ("frisbee",),
    "skis": ("skis", "ski"),
    "snowboard": ("snowboard",),
    "sports ball": ("sports ball", "ball"),
    "kite": ("kite",),
    "baseball bat": ("baseball bat",),
    "baseball glove": ("baseball glove",),
    "skateboard": ("skateboard",),
    "surfboard": ("surfboard", "longboard", "skimboard", "shortboard", "wakeboard"),
    "tennis racket": ("tennis racket", "racket"),
    "bottle": ("bottle",),
    "wine glass": ("wine glass",),
    "cup": ("cup",),
    "fork": ("fork",),
    "knife": ("knife", "pocketknife", "knive"),
    "spoon": ("spoon",),
    "bowl": ("bowl", "container"),
    "banana": ("banana",),
    "apple": ("apple",),
    "sandwich": ("sandwich", "burger", "sub", "cheeseburger", "hamburger"),
    "orange": ("orange",),
    "broccoli": ("broccoli",),
    "carrot": ("carrot",),
    "hot dog": ("hot dog",),
    "pizza": ("pizza",),
    "donut": ("donut", "doughnut", "bagel"),
    "cake": ("cake", "cheesecake", "cupcake", "shortcake", "coffeecake", "pancake"),
    "chair": ("chair", "seat", "stool"),
    "couch": ("couch", "sofa", "recliner", "futon", "loveseat", "settee", "chesterfield"),
    "potted plant": ("potted plant", "houseplant"),
    "bed": ("bed",),
    "dining table": ("dining table", "table", "desk"),
    "toilet": ("toilet", "urinal", "commode", "lavatory", "potty"),
    "tv": ("tv", "monitor", "televison", "television"),
    "laptop": ("laptop", "computer", "notebook", "netbook", "lenovo", "macbook", "laptop computer"),
    "mouse": ("mouse",),
    "remote": ("remote",),
    "keyboard": ("keyboard",),
    "cell phone": ("cell phone", "mobile phone", "phone", "cellphone", "telephone", "phon", "smartphone", "iphone"),
    "microwave": ("microwave",),
    "oven": ("oven", "stovetop", "stove", "stove top oven"),
    "toaster": ("toaster",),
    "sink": ("sink",),
    "refrigerator": ("refrigerator", "fridge", "freezer"),
    "book": ("book",),
    "clock": ("clock",),
    "vase": ("vase",),
    "scissors": ("scissors",),
    "teddy bear": ("teddy bear", "teddybear"),
    "hair drier": ("hair drier", "hairdryer"),
    "toothbrush": ("toothbrush",),
}

# The original's hard-coded phrase list ('double words'), each read as itself.
_ORIGINAL_DOUBLE_WORDS = (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
    "potted plant", "bow tie", "laptop computer", "stove top oven", "home plate", "train track",
)
# Qualifiers that would otherwise fire "person": 'baby elephant' is an elephant ('animal' and 'cub' are no object).
_ANIMAL_WORDS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal",
                 "cub")
_VEHICLE_WORDS = ("jet", "train")


def _build_phrases() -> dict[tuple[str, ...], str]:
    phrases: dict[tuple[str, ...], str] = {}
    for names in SYNONYMS.values():
        for name in names:
            if " " in name:
                phrases[tuple(name.split())] = name
    for p in _ORIGINAL_DOUBLE_WORDS:
        phrases[tuple(p.split())] = p
    for animal in _ANIMAL_WORDS:
        phrases[("baby", animal)] = animal
        phrases[("adult", animal)] = animal
    for vehicle in _VEHICLE_WORDS:
        phrases[("passenger", vehicle)] = vehicle
    phrases[("bow", "tie")] = "tie"
    phrases[("toilet", "seat")] = "toilet"
    return phrases


PHRASES: dict[tuple[str, ...], str] = _build_phrases()

# synonym (surface word or phrase) -> COCO category name
WORD_TO_CATEGORY: dict[str, str] = {s: cat for cat, names in SYNONYMS.items() for s in names}

assert len(COCO_CATEGORIES) == 80 and set(COCO_CATEGORIES) == set(SYNONYMS), "synonym table must cover all 80"
