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
