"""Write the demo task's data: "who has what" look-ups, with gold labels. Seeded; nothing is downloaded.

    python examples/make_demo_data.py        # rewrites rationale_distill/demo/lookup_{train,test}.jsonl

Each question lists three people with a coloured object each and asks for the colour of one of them:
"Tom has a red ball, Mia has a blue kite, Ana has a green hat. What color is Mia's kite?" -> "blue".
Why this task: Gemma 3 270M (a base model) cannot answer the bare question (it continues the list instead),
but with a few-shot chain-of-thought prompt it copies the relevant clause ("Mia has a blue kite.") and then the
answer, right about half the time. Self-consistency sampling and the gold filter turn that into clean
rationales, and the rationale (find the clause) is exactly the skill the student has to learn.
"""

import json
import random
from pathlib import Path

NAMES = ["Tom", "Mia", "Ana", "Ben", "Leo", "Zoe", "Sam", "Eva", "Max", "Ivy", "Noah", "Lily"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "pink", "brown"]
OBJECTS = ["ball", "kite", "hat", "bike", "cup", "book", "bag", "car", "pen", "shoe"]
OUT = Path(__file__).resolve().parents[1] / "rationale_distill" / "demo"


def example(rng: random.Random, k: int = 3) -> dict:
    names, colors, objects = rng.sample(NAMES, k), rng.sample(COLORS, k), rng.sample(OBJECTS, k)
    i = rng.randrange(k)
    facts = ", ".join(f"{n} has a {c} {o}" for n, c, o in zip(names, colors, objects))
    return {"question": f"{facts}. What color is {names[i]}'s {objects[i]}?", "answer": colors[i]}


def main() -> None:
    rng = random.Random(2026)
    seen, rows = set(), []
    while len(rows) < 300:
        row = example(rng)
        if row["question"] not in seen:
            seen.add(row["question"])
            rows.append(row)
    for name, part in (("lookup_train.jsonl", rows[:200]), ("lookup_test.jsonl", rows[200:])):
        with open(OUT / name, "w") as fh:
            for i, row in enumerate(part):
                fh.write(json.dumps({"id": f"{name.split('_')[1][:-6]}-{i:03d}", **row}) + "\n")
    print(f"wrote {OUT}/lookup_train.jsonl (200) and lookup_test.jsonl (100)")


if __name__ == "__main__":
    main()
