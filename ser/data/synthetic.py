"""The embedded default dataset: offline, seeded, any size, with known ground truth.

Every pair has a correct `chosen` answer and a `rejected` answer made wrong in one known way.
Two families of faults, so that both of SER's learning statuses matter:

- stark (status 1, "tell good from bad"): a refusal, an off-topic answer, or an answer about
  the wrong entity;
- subtle (status 2, "finer differences"): one wrong detail (the profile attribute or one step
  of a procedure changed) or a missing step in a procedure.

Two domains give the answers something to be right about: short profiles of people (the answer
must restate the asked attribute from the prompt) and a fixed library of procedures (the answer
must list all the steps). Both are learnable from data, and more data helps, which is what lets
self-labeling pay off. The kind of each pair is kept in its id, so results can be split by kind.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from ser.data.schema import PreferencePair

NAMES = (
    "Anna Ben Clara David Elena Farid Grace Hugo Iris Jonas Kira Liam Maya Noah Olga Pablo "
    "Quinn Rosa Samir Tara Umar Vera Wen Ximena Yusuf Zoe Arjun Bea Chen Dora Emil Fatima "
    "Goran Hana Ivan Jade Kofi Lena Marco Nadia"
).split()
ATTRIBUTES = {
    "job": "teacher nurse baker pilot carpenter chemist farmer lawyer painter plumber "
    "librarian dentist engineer florist journalist architect electrician tailor".split(),
    "city": "Lisbon Oslo Nairobi Lima Hanoi Dublin Cairo Quito Perth Tunis Riga Accra "
    "Boston Denver Kyoto Porto Malmo Lyon".split(),
    "pet": "cat dog parrot rabbit hamster turtle goldfish ferret pony lizard".split(),
    "colour": "red blue green yellow purple orange black white grey pink".split(),
    "hobby": "chess hiking knitting surfing painting gardening cycling fishing "
    "pottery climbing".split(),
}
# How a profile states each attribute, and how a question asks for it.
STATEMENTS = {
    "job": "{name} works as a {value}.",
    "city": "{name} lives in {value}.",
    "pet": "{name} has a {value} at home.",
    "colour": "{name}'s favourite colour is {value}.",
    "hobby": "On weekends {name} enjoys {value}.",
}
QUESTIONS = {
    "job": ["What does {name} do for a living?", "What is {name}'s job?"],
    "city": ["Where does {name} live?", "Which city is {name} from?"],
    "pet": ["What pet does {name} have?", "Which animal lives with {name}?"],
    "colour": ["What is {name}'s favourite colour?", "Which colour does {name} like best?"],
    "hobby": ["What does {name} do on weekends?", "What is {name}'s hobby?"],
}
ANSWERS = {
    "job": ["{name} works as a {value}.", "{name} is a {value} by profession."],
    "city": ["{name} lives in {value}.", "{name} is from {value}."],
    "pet": ["{name} has a {value}.", "A {value} lives with {name}."],
    "colour": ["{name}'s favourite colour is {value}.", "{name} likes {value} best."],
    "hobby": ["{name} enjoys {value} on weekends.", "{name}'s hobby is {value}."],
}
PROCEDURES = {
    "make a cup of tea": ["Boil fresh water", "Put a tea bag in a cup", "Pour the hot water over the bag",
                          "Let it steep for three minutes", "Remove the bag and serve"],
    "plant a tomato seedling": ["Choose a sunny spot", "Dig a hole twice the size of the pot",
                                "Place the seedling in the hole", "Fill the hole with soil",
                                "Water the plant deeply"],
    "change a flat bicycle tyre": ["Remove the wheel from the frame", "Lever the tyre off the rim",
                                   "Replace the inner tube", "Push the tyre back onto the rim",
                                   "Pump the tyre to the right pressure", "Refit the wheel"],
    "boil an egg": ["Place the egg in a pan of cold water", "Bring the water to a boil",
                    "Simmer for seven minutes", "Cool the egg in cold water"],
    "back up a laptop": ["Plug in an external drive", "Open the backup settings",
                         "Select the drive as the backup target", "Start the backup",
                         "Check that the backup finished"],
    "repot a houseplant": ["Water the plant the day before", "Ease the plant out of its pot",
                           "Loosen the roots gently", "Set it in a larger pot with fresh soil",
                           "Water it well"],
    "make pancakes": ["Whisk flour, eggs and milk into a batter", "Heat a buttered pan",
                      "Pour in a ladle of batter", "Flip when bubbles appear",
                      "Cook the other side for a minute"],
    "wash a wool sweater": ["Fill a basin with cool water", "Add a little wool detergent",
                            "Soak the sweater for ten minutes", "Press out the water without wringing",
                            "Dry it flat on a towel"],
    "jump-start a car": ["Park the working car close", "Connect red to the dead battery's plus terminal",
                         "Connect red to the good battery's plus terminal",
                         "Connect black to the good battery's minus terminal",
                         "Clip black to bare metal on the dead car", "Start the working car, then the dead one"],
    "brew filter coffee": ["Rinse the paper filter", "Add ground coffee to the filter",
                           "Pour a little hot water to bloom the grounds", "Pour the rest of the water slowly",
                           "Serve when it has dripped through"],
    "clean a cast iron pan": ["Rinse the pan with hot water", "Scrub off food with a brush",
                              "Dry the pan completely on the stove", "Rub in a thin layer of oil"],
    "set up a tent": ["Clear the ground of stones", "Lay out the footprint", "Unfold the tent on top",
                      "Insert the poles into the sleeves", "Stake down the corners", "Attach the rain fly"],
    "make a paper airplane": ["Fold the sheet in half lengthwise", "Fold the top corners to the centre",
                              "Fold the new edges to the centre again", "Fold the plane in half",
                              "Fold down both wings"],
    "cook rice": ["Rinse the rice until the water is clear", "Add one and a half cups of water per cup",
                  "Bring it to a boil", "Cover and simmer for fifteen minutes", "Rest it for five minutes"],
    "paint a wall": ["Clean the wall", "Tape the edges", "Apply a coat of primer", "Paint the first coat",
                     "Let it dry and paint a second coat"],
    "send a registered letter": ["Write the address clearly", "Take the letter to the post office",
                                 "Ask for registered delivery", "Pay the fee", "Keep the receipt"],
}
# Wrong versions of single steps, for the "one wrong detail" fault in procedures.
STEP_ERRORS = {
    "three minutes": "thirty minutes", "seven minutes": "twenty minutes", "cold water": "boiling oil",
    "fifteen minutes": "two minutes", "cool water": "boiling water", "ten minutes": "ten hours",
    "sunny spot": "dark cupboard", "deeply": "with salt water", "without wringing": "by wringing hard",
    "thin layer of oil": "thick layer of soap", "hot water": "cold water", "slowly": "all at once",
}
CONTEXTS = [
    "I'm {name} and this is my first time.", "My friend {name} asked me this.", "I live in {city}.",
    "{name} here, writing from {city}.", "I am helping {name} this weekend.", "We just moved to {city}.",
]
PROCEDURE_QUESTIONS = ["How do I {task}?", "What are the steps to {task}?", "Can you explain how to {task}?"]
REFUSALS = [
    "I'm sorry, but I can't help with that request.",
    "As an AI, I am not able to answer this question.",
    "I don't have enough information to respond.",
    "Sorry, I cannot assist with that.",
]
OFF_TOPIC = [
    "Bananas are an excellent source of potassium.",
    "The Pacific is the largest ocean on Earth.",
    "Regular exercise improves sleep quality.",
    "Jupiter has dozens of known moons.",
    "Many trains in Europe run on electricity.",
    "Honey never really spoils if it is stored well.",
]

STARK_KINDS = ("refusal", "off_topic", "wrong_entity")
SUBTLE_KINDS = ("wrong_detail", "missing_step")


def _numbered(steps: list[str]) -> str:
    return " ".join(f"{i}. {step}." for i, step in enumerate(steps, start=1))


def _profile_scenario(rng: random.Random) -> dict:
    name, other = rng.sample(NAMES, 2)
    attributes = rng.sample(sorted(ATTRIBUTES), 3)
    values = {attr: rng.choice(ATTRIBUTES[attr]) for attr in attributes}
    asked = rng.choice(attributes)
    profile = " ".join(STATEMENTS[a].format(name=name, value=values[a]) for a in attributes)
    template = rng.choice(ANSWERS[asked])
    return {
        "domain": "profile", "name": name, "other": other, "asked": asked, "template": template,
        "prompt": f"{profile} {rng.choice(QUESTIONS[asked]).format(name=name)}",
        "chosen": template.format(name=name, value=values[asked]), "value": values[asked],
    }


def _profile_fault(s: dict, kind: str, rng: random.Random) -> str:
    if kind == "wrong_detail":
        wrong = rng.choice([v for v in ATTRIBUTES[s["asked"]] if v != s["value"]])
        return s["template"].format(name=s["name"], value=wrong)
    if kind == "wrong_entity":  # about somebody else entirely, with other facts
        return " ".join(STATEMENTS[a].format(name=s["other"], value=rng.choice(ATTRIBUTES[a]))
                        for a in rng.sample(sorted(ATTRIBUTES), 2))
    return _stark_text(rng, kind)


def _procedure_scenario(rng: random.Random) -> dict:
    task = rng.choice(sorted(PROCEDURES))
    # A short personal context makes each prompt distinct: otherwise a few dozen prompts would be
    # shared by hundreds of pairs, and whole-prompt splits would give tiny, lopsided validation sets.
    context = rng.choice(CONTEXTS).format(name=rng.choice(NAMES), city=rng.choice(ATTRIBUTES["city"]))
    return {
        "domain": "procedure", "task": task, "steps": PROCEDURES[task],
        "prompt": f"{context} {rng.choice(PROCEDURE_QUESTIONS).format(task=task)}",
        "chosen": _numbered(PROCEDURES[task]),
    }


def _procedure_fault(s: dict, kind: str, rng: random.Random) -> str:
    steps = s["steps"]
    if kind == "missing_step":
        drop = rng.randrange(len(steps))
        return _numbered(steps[:drop] + steps[drop + 1 :])
    if kind == "wrong_detail":
        return _numbered(_corrupt_one_step(rng, steps))
    if kind == "wrong_entity":  # the steps of a different task
        other = rng.choice([t for t in sorted(PROCEDURES) if t != s["task"]])
        return _numbered(PROCEDURES[other])
    return _stark_text(rng, kind)


def _corrupt_one_step(rng: random.Random, steps: list[str]) -> list[str]:
    fixable = [i for i, s in enumerate(steps) if any(k in s for k in STEP_ERRORS)]
    if fixable:
        i = rng.choice(fixable)
        key = next(k for k in STEP_ERRORS if k in steps[i])
        return steps[:i] + [steps[i].replace(key, STEP_ERRORS[key])] + steps[i + 1 :]
    # No known detail to falsify: swap two adjacent steps (wrong order is also one wrong detail).
    i = rng.randrange(len(steps) - 1)
    return steps[:i] + [steps[i + 1], steps[i]] + steps[i + 2 :]


def _stark_text(rng: random.Random, kind: str) -> str:
    return rng.choice(REFUSALS if kind == "refusal" else OFF_TOPIC)


def iter_synthetic_pairs(n_pairs: int, seed: int = 0, subtle_fraction: float = 0.5,
                         pairs_per_prompt: int = 2) -> Iterator[tuple[PreferencePair, str]]:
    """Yield `n_pairs` (pair, kind) tuples; the same arguments always give the same pairs.

    Up to `pairs_per_prompt` pairs share one prompt (same chosen answer, other faults), as in real
    data where one prompt has several comparisons; splits must keep them together.
    """
    if n_pairs < 1:
        raise ValueError(f"synthetic n_pairs must be >= 1, got {n_pairs}")
    if not 0.0 <= subtle_fraction <= 1.0:
        raise ValueError(f"synthetic subtle_fraction must be in [0, 1], got {subtle_fraction}")
    rng = random.Random(seed)
    made = 0
    prompt_index = 0
    while made < n_pairs:
        profile = rng.random() < 0.5
        scenario = _profile_scenario(rng) if profile else _procedure_scenario(rng)
        fault = _profile_fault if profile else _procedure_fault
        seen = {scenario["chosen"]}
        for k in range(rng.randint(1, max(1, pairs_per_prompt))):
            if rng.random() < subtle_fraction:
                kind = "wrong_detail" if profile else rng.choice(SUBTLE_KINDS)
            else:
                kind = rng.choice(STARK_KINDS)
            rejected = fault(scenario, kind, rng)
            if rejected in seen:  # never a duplicate comparison, never chosen == rejected
                continue
            seen.add(rejected)
            pair = PreferencePair(id=f"syn-{prompt_index:06d}-{k}-{kind}", prompt=scenario["prompt"],
                                  chosen=scenario["chosen"], rejected=rejected)
            yield pair, kind
            made += 1
            if made >= n_pairs:
                return
        prompt_index += 1


def synthetic_pairs(n_pairs: int, seed: int = 0, subtle_fraction: float = 0.5,
                    pairs_per_prompt: int = 2) -> list[PreferencePair]:
    """The embedded dataset as a list; see `iter_synthetic_pairs`."""
    return [pair for pair, _ in iter_synthetic_pairs(n_pairs, seed, subtle_fraction, pairs_per_prompt)]


def pair_kind(pair_id: str) -> str:
    """The fault kind recorded in a synthetic pair's id (e.g. 'missing_step')."""
    return pair_id.split("-", 3)[3]


def is_stark(kind: str) -> bool:
    return kind in STARK_KINDS


def fine_kind(pair: PreferencePair) -> str:
    """The fault kind, with a procedure's wrong detail told apart when it is two swapped steps (the
    procedures with no falsifiable detail): "swapped_steps". Read from the pair; the generator is unchanged."""
    kind = pair_kind(pair.id)
    if kind == "wrong_detail" and pair.chosen.startswith("1. ") and not any(k in pair.chosen for k in STEP_ERRORS):
        return "swapped_steps"
    return kind
