"""Write the shipped classification example: support-ticket triage into 5 queues, with gold labels and a held-out
split. Seeded; offline.

    python examples/make_triage.py [FOLDER]    # rewrites rationale_distill/demo/triage_{train,test}.jsonl

Each message is put together from an opener, a request of one queue (many phrasings, with names, products, numbers
and dates filled in) and a closing; about one in five also mentions a second topic that must not decide the queue
(the prompt's rule: route by what the customer needs done, not by the words they use: "the invoice page shows an
error" is billing; "I can't log in after the update" is account). The teacher prompt is `support-triage`.
"""

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "rationale_distill" / "demo"
QUEUES = ("billing", "technical", "account", "sales", "feedback")
PRODUCTS = ["the Pro plan", "our Team workspace", "the mobile app", "the reporting add-on", "the API", "the desktop client"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]
NAMES = ["Sam", "Priya", "Jonas", "Mei", "Carlos", "Aisha", "Tom", "Elena"]
REQUESTS = {
    "billing": [
        "I was charged twice for {month}. Can you refund one of the payments?",
        "Our invoice for {month} shows {n} seats but we only have {m}. Please correct it.",
        "How do I change the credit card we pay with?",
        "Can you send me a receipt with our VAT number on it for {month}?",
        "Why did the price of {product} go up on our last bill?",
        "The invoice page shows an error when I try to download the PDF for {month}; I just need the invoice.",
        "We cancelled in {month} but were still charged. I'd like that money back.",
        "Please switch us from monthly to yearly billing.",
    ],
    "technical": [
        "Since this morning every call to {product} returns a 502.",
        "{product} crashes as soon as I open a project with more than {n} files.",
        "Exports from {product} have been stuck at 0% for {n} hours.",
        "The numbers in the dashboard don't match our database since the {month} update.",
        "Our webhook stopped firing; nothing has arrived since {month} {n}.",
        "Search in {product} is extremely slow, about {n} seconds per query.",
        "The sync between {product} and our CRM duplicates every contact.",
        "We get a timeout error whenever we upload a file larger than {n} MB.",
    ],
    "account": [
        "I can't log in after the update; it says my password is wrong.",
        "{name} left the company. How do I remove them and make {other} the account owner?",
        "Please reset two-factor authentication for {name}; they lost their phone.",
        "How do I add {n} new users to our workspace?",
        "I want to close our account and delete our data.",
        "Can you change the email address on my login to my new work address?",
        "{name} is locked out after too many password attempts.",
        "How do I give {name} admin rights?",
    ],
    "sales": [
        "We're {n} people now. Could you send a quote for the enterprise plan with SSO?",
        "Do you offer a discount for {n} or more seats?",
        "I'd like to book a demo of {product} for our team.",
        "What does upgrading from the Starter plan to {product} include?",
        "Is there a non-profit price for {product}?",
        "We want to buy {n} more licences before {month}. Who can help?",
        "Can we get a trial of the enterprise features before we buy?",
        "Does the enterprise plan include a dedicated support manager?",
    ],
    "feedback": [
        "Just wanted to say {product} saved our team hours this month. Great work!",
        "The new design of {product} is confusing; the old menu was much better.",
        "It would be great if {product} had a dark mode.",
        "Your support agent {name} was incredibly helpful yesterday. Thank you!",
        "I'm disappointed that {product} removed the calendar view in {month}.",
        "Suggestion: let us export reports as CSV as well as PDF.",
        "Honestly the onboarding emails are too frequent.",
        "Love the new keyboard shortcuts in {product}.",
    ],
}
OPENERS = ["", "Hi, ", "Hello team, ", "Hi there! ", "Good morning, ", "Urgent: ", "Quick question. "]
CLOSINGS = ["", " Thanks.", " Thank you!", " Regards, {name}.", " Cheers, {name}", " Please help asap."]
ASIDES = {  # a second topic that does not decide the queue
    "billing": " By the way, the app has been a bit slow lately.",
    "technical": " Also, love the new design.",
    "account": " Unrelated, but when is the next invoice due?",
    "sales": " Our current setup works fine, no issues.",
    "feedback": " No need to reply.",
}


def ticket(rng: random.Random) -> dict:
    queue = rng.choice(QUEUES)
    name, other = rng.sample(NAMES, 2)
    fill = {"month": rng.choice(MONTHS), "n": rng.randint(2, 60), "m": rng.randint(1, 40), "product": rng.choice(PRODUCTS),
            "name": name, "other": other}  # fmt: skip
    text = rng.choice(OPENERS) + rng.choice(REQUESTS[queue]).format(**fill)
    if rng.random() < 0.2:
        text += ASIDES[queue]
    text += rng.choice(CLOSINGS).format(**fill)
    return {"text": text.strip(), "queue": queue}


def main(out: Path = OUT, n_train: int = 400, n_test: int = 150, seed: int = 2029) -> None:
    rng, seen, rows = random.Random(seed), set(), []
    while len(rows) < n_train + n_test:
        row = ticket(rng)
        if row["text"] not in seen:
            seen.add(row["text"])
            rows.append(row)
    for split, part in (("train", rows[:n_train]), ("test", rows[n_train:])):
        with open(out / f"triage_{split}.jsonl", "w") as fh:
            for i, row in enumerate(part):
                fh.write(json.dumps({"id": f"triage-{split}-{i:03d}", **row}) + "\n")
    print(f"wrote {out}/triage_train.jsonl ({n_train}) and triage_test.jsonl ({n_test})")


if __name__ == "__main__":
    import sys

    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
