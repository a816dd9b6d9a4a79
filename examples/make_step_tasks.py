"""Write two tasks whose answers need intermediate steps, with gold labels and held-out splits. Seeded; offline.

    python examples/make_step_tasks.py [FOLDER]    # rewrites rationale_distill/demo/{twohop,arith}_{train,test}.jsonl

- twohop: who has what, then where each thing is; the answer (a place) needs the intermediate result (the thing):
  "Tom has a ball, Mia has a kite, Ana has a hat. The hat is in the garden, the kite is in the car, the ball is in
  the kitchen. Where is the thing Mia has?" -> "car"; the rationale: "Mia has a kite. The kite is in the car."
- arith: two-step word problems; the answer needs the first product or sum:
  "Tom buys 3 bags with 4 apples in each bag. He eats 5 apples. How many apples are left?" -> "7"; the rationale:
  "3 bags with 4 apples each is 3 * 4 = 12 apples. 12 - 5 = 7."

The look-up task of the demo (`make_demo_data.py`) stays: there the rationale is one copied clause, the honest case
where rationales add little. `plugins/step_teacher.py` is a programmatic teacher that writes these rationales.
"""

import json
import random
from pathlib import Path

NAMES = ["Tom", "Mia", "Ana", "Ben", "Leo", "Zoe", "Sam", "Eva", "Max", "Ivy", "Noah", "Lily"]
THINGS = ["ball", "kite", "hat", "bike", "cup", "book", "bag", "car", "pen", "shoe"]
PLACES = ["kitchen", "garden", "garage", "attic", "hall", "yard", "shed", "basement"]
FRUITS = ["apples", "pears", "plums", "eggs", "cookies", "stamps", "marbles", "cards"]
CONTAINERS = ["bags", "boxes", "jars", "baskets", "packs", "trays"]
OUT = Path(__file__).resolve().parents[1] / "rationale_distill" / "demo"


def twohop(rng: random.Random, k: int = 3) -> dict:
    names, things, places = rng.sample(NAMES, k), rng.sample(THINGS, k), rng.sample(PLACES, k)
    i = rng.randrange(k)
    has = ", ".join(f"{n} has a {t}" for n, t in zip(names, things))
    order = rng.sample(range(k), k)
    where = ", ".join(f"the {things[j]} is in the {places[j]}" for j in order)
    question = f"{has}. {where[0].upper() + where[1:]}. Where is the thing {names[i]} has?"
    return {"question": question, "answer": places[i], "rationale": f"{names[i]} has a {things[i]}. The {things[i]} is in the {places[i]}."}


def arith(rng: random.Random) -> dict:
    name, item, box = rng.choice(NAMES), rng.choice(FRUITS), rng.choice(CONTAINERS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    total = a * b
    if rng.random() < 0.5:
        c = rng.randint(1, total - 1)
        question = f"{name} buys {a} {box} with {b} {item} in each. {name} gives away {c} {item}. How many {item} are left?"
        answer, step = total - c, f"{total} - {c} = {total - c}."
    else:
        c = rng.randint(1, 9)
        question = f"{name} buys {a} {box} with {b} {item} in each. {name} finds {c} more {item}. How many {item} are there now?"
        answer, step = total + c, f"{total} + {c} = {total + c}."
    rationale = f"{a} {box} with {b} {item} each is {a} * {b} = {total} {item}. {step}"
    return {"question": question, "answer": str(answer), "rationale": rationale}


def write(name: str, make, rng: random.Random, out: Path = OUT, n_train: int = 400, n_test: int = 100) -> None:
    seen, rows = set(), []
    while len(rows) < n_train + n_test:
        row = make(rng)
        if row["question"] not in seen:
            seen.add(row["question"])
            rows.append(row)
    for split, part in (("train", rows[:n_train]), ("test", rows[n_train:])):
        with open(out / f"{name}_{split}.jsonl", "w") as fh:
            for i, row in enumerate(part):
                # the reference rationale is kept apart from what a teacher is shown: `reference_rationale`
                fh.write(json.dumps({"id": f"{name}-{split}-{i:03d}", "question": row["question"], "answer": row["answer"],
                                     "reference_rationale": row["rationale"]}) + "\n")  # fmt: skip
    print(f"wrote {out}/{name}_train.jsonl ({n_train}) and {name}_test.jsonl ({n_test})")


def main(out: Path = OUT) -> None:
    write("twohop", twohop, random.Random(2027), out)
    write("arith", arith, random.Random(2028), out)


if __name__ == "__main__":
    import sys

    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
