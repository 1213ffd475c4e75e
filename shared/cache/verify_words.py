"""The verification's word list: the parts and places a question can be about, by kind.

Two prompts that each name a different member of one kind ("at the gum line" / "on the back of the tooth", "under
the sink" / "behind the washer", "the hinge" / "the trackpad") ask about different things, however the rest of the
sentence is worded: the alignment rule of `shared.cache.verify` sees a swap only in the same sentence, this sees it
in a rewording too. The kinds are generic head nouns (anatomy, a building and its fittings, a vehicle, a device,
a position), not the words of any evaluation set; a prompt naming one member and the other none is not refused
here (one of them may just be more specific, which the other checks judge).

Words are written as `shared.cache.verify` stems them (singular, no -ing/-ed); synonyms it folds (stomach/belly)
count as one member.
"""

from __future__ import annotations


def _kind(text: str) -> frozenset[str]:
    return frozenset(text.split())


PART_KINDS: dict[str, frozenset[str]] = {
    "body": _kind(
        """
        head scalp forehead temple face eye eyelid eyebrow eyelash ear earlobe eardrum nose nostril sinus mouth lip
        tongue gum tooth teeth molar jaw cheek chin throat tonsil neck nape shoulder collarbone chest breast nipple
        rib armpit underarm arm elbow forearm wrist hand palm finger fingertip thumb knuckle fingernail toenail nail
        back spine tailbone hip waist stomach navel groin thigh leg knee kneecap shin calf ankle heel foot feet toe
        sole arch buttock bottom pelvis bladder kidney liver lung heart brain skin muscle bone joint tendon hamstring
        gland lymph colon bowel intestine gut esophagus windpipe vein artery
        """
    ),
    "building": _kind(
        """
        kitchen bathroom bedroom basement cellar attic loft garage garden yard backyard porch patio deck balcony
        driveway roof ceiling wall floor window door stair staircase hallway closet wardrobe pantry chimney
        fireplace foundation gutter downspout sink toilet bathtub tub shower faucet tap drain pipe fridge freezer
        oven stove cooktop dishwasher washer dryer furnace boiler heater vent duct outlet socket cabinet countertop
        counter sofa couch carpet rug mattress crib lawn fence shed pool hatch frame railing tile grout skylight
        siding shingle crawlspace doorframe sill
        """
    ),
    "vehicle": _kind(
        """
        engine hood bonnet trunk boot tire tyre wheel rim brake axle steering transmission gearbox clutch exhaust
        muffler windshield windscreen wiper bumper headlight taillight alternator radiator dashboard seat mirror
        suspension hubcap fender chain pedal handlebar saddle derailleur
        """
    ),
    "device": _kind(
        """
        screen display keyboard trackpad touchpad hinge port speaker microphone camera charger cable fan battery
        button lens bezel motherboard cpu gpu ssd stylus
        """
    ),
    "position": _kind(
        """
        top bottom upper lower inner outer front back rear middle center side corner edge base tip surface
        underside inside outside
        """
    ),
}

# Contrast families: each is a tuple of sides, and two prompts that each name a side of one family, none in common,
# ask about different things however the rest is worded ("as the seller, what must I disclose" / "I'm buying,
# what should I ask"; "dough rising too much" / "dough that barely rises"). The alignment rule sees a swap only in
# the same sentence; the guard's opposites compare raw words. These are generic lexicons (opposite qualities,
# parties to one transaction or relation, actions that undo each other, relatives), written from the kinds of
# swap issue 12 names, not from any evaluation set's words; a prompt naming both sides of a family is never
# refused here (it mentions both parties). Inflections are listed where the stemmer does not fold them.
CONTRAST_FAMILIES: tuple[tuple[str, ...], ...] = (
    # quantities and qualities
    ("much excess excessive overly plenty", "little barely hardly scarcely insufficient"),
    ("loud louder noisy noisier", "quiet quieter silent"),
    ("humid humidity moist damp", "dry drier dried"),
    ("thick thicker", "thin thinner runny"),
    ("heavy heavier", "light lighter lightweight"),
    ("bright brighter", "dim dimmer dark darker"),
    ("early earlier", "late later"),
    ("longer lengthen", "shorter shorten"),
    ("tight tighter tighten", "loose looser loosen"),
    ("strong stronger strengthen", "weak weaker weaken"),
    ("deep deeper deepen", "shallow shallower"),
    ("wide wider widen", "narrow narrower"),
    ("warm warmer warmth hot hotter heat", "cool cooler cold colder chilly"),
    ("big bigger", "small smaller"),
    ("old older elderly", "young younger"),
    ("rich wealthy", "poor"),
    ("fresh", "stale"),
    ("clean", "dirty"),
    ("rise rising", "fall falling fell"),
    ("overwater overwatered overwatering", "underwater underwatered underwatering"),
    ("overcooked overcook", "undercooked undercook"),
    ("upstairs", "downstairs"),
    ("indoor indoors", "outdoor outdoors"),
    ("summer", "winter"),
    ("morning", "evening night"),
    # parties and roles
    ("buyer buy buying bought purchaser", "seller sell selling sold vendor"),
    ("landlord", "tenant renter lessee"),
    ("employer", "employee"),
    ("lender lend lending lent creditor", "borrower borrow borrowing borrowed debtor"),
    ("sender send sending sent shipper", "recipient receiver receive receiving received"),
    ("teacher tutor instructor professor", "student pupil learner"),
    ("doctor surgeon dentist", "patient"),
    ("host", "guest visitor"),
    ("driver", "passenger rider"),
    ("interviewer recruiter", "candidate interviewee applicant"),
    ("plaintiff", "defendant"),
    ("mentor", "mentee"),
    ("donor", "recipient"),
    ("coach", "player"),
    ("client customer", "freelancer contractor consultant"),
    ("author", "publisher"),
    ("executor", "beneficiary heir"),
    ("insurer", "insured policyholder"),
    ("franchisor", "franchisee"),
    ("payer", "payee"),
    # actions that undo or answer each other
    ("freeze freezing froze frozen", "thaw thawing defrost defrosting"),
    ("archive archiving", "unarchive restore"),
    ("mount mounting", "unmount"),
    ("subscribe subscribing register", "unsubscribe unsubscribing"),
    ("join joining", "quit quitting"),
    ("hire hiring hired", "fire firing fired dismiss"),
    ("pack packing", "unpack unpacking"),
    ("attach attaching", "detach detaching"),
    ("merge merging", "split splitting"),
    ("mute muting", "unmute"),
    ("follow following", "unfollow"),
    ("inflate inflating", "deflate deflating"),
    ("arrive arriving arrival", "depart departing departure"),
    ("wash washing", "dry drying"),
    # people of one kind: each a different person
    ("man men male boy", "woman women female girl"),
    ("husband", "wife"),
    ("son", "daughter"),
    ("brother", "sister"),
    ("father dad", "mother mom"),
    ("grandfather grandpa", "grandmother grandma"),
    ("uncle", "aunt"),
    ("nephew", "niece"),
    ("groom", "bride"),
)
