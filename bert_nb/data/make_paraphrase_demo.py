"""Write bert_nb's paraphrase demo set (`paraphrase_demo/train.tsv`, `dev.tsv`) in MRPC's layout, deterministically.

Every pair comes from a hand-written family of sentences that say the same thing in different words
(synonyms, reordering, active/passive, digits or words for numbers). A paraphrase (label 1) is two
realisations of the same facts; a non-paraphrase (label 0) is two realisations whose facts differ: most
often in one place (a changed name, number, day or place, an antonym), or by a negation, two roles swapped
(the same words, another meaning), two changed facts, or all of them. Both kinds reword the sentence, so
word overlap alone does not give the label.

Run `python bert_nb/data/make_paraphrase_demo.py [FOLDER]` to rewrite the files (same seed, same bytes).
"""
import random, re, sys
from pathlib import Path

NAMES = ["Maria", "Daniel", "Aisha", "Kenji", "Sofia", "Liam", "Priya", "Tomas", "Grace", "Omar", "Elena", "Hugo",
         "Nadia", "Victor", "Chloe", "Samuel", "Ingrid", "Mateo", "Yuki", "Rosa", "Felix", "Amara", "Oscar", "Leila"]
COMPANIES = ["Northwind", "Bluepeak", "Corvex", "Halden Labs", "Marlow Foods", "Quintara", "Redstone Energy", "Velora",
             "Ashgrove Bank", "Tidewell", "Orbis Motors", "Sunfield"]
CITIES = ["Boston", "Denver", "Lisbon", "Osaka", "Nairobi", "Toronto", "Madrid", "Seattle", "Dublin", "Lima", "Oslo",
          "Cairo", "Perth", "Austin", "Vienna", "Manila"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
TEAMS = ["Lions", "Tigers", "Hawks", "Wolves", "Bears", "Falcons", "Sharks", "Eagles", "Panthers", "Rangers"]
ITEMS = ["apples", "notebooks", "tickets", "candles", "shirts", "books", "plates", "lamps", "chairs", "batteries"]
SHOPS = ["market", "bookstore", "mall", "hardware store", "bakery", "pharmacy"]
ROLES = ["chief executive", "finance chief", "head of research", "chairman", "general counsel", "sales director"]
SUBJECTS = ["history", "chemistry", "algebra", "biology", "geography", "physics"]
ANIMALS = ["cats", "koalas", "horses", "bats", "sloths", "giraffes", "owls", "dolphins"]
DISHES = ["bread", "lasagna", "chicken", "cake", "salmon", "pie"]
PRODUCTS = ["Aero 5 phone", "Lumen tablet", "Pulse watch", "Nova laptop", "Echo speaker",
            "Vista camera"]
BODIES = ["senate", "city council", "school board", "committee", "assembly"]
BILLS = ["budget", "housing bill", "tax plan", "transit proposal", "water bill", "park plan"]
AIRLINES = ["Skyline", "Aerona", "Bluejet", "Condor Air", "Polar Airways"]
BOOKS = ["The Quiet Harbor", "Salt and Iron", "A Winter Garden", "The Glass River", "Night Trains", "Paper Moons"]
WEATHER = ["[rain|showers]", "[snow|snowfall]", "[sunshine|clear skies]", "[strong winds|high winds]",
           "[fog|thick fog]"]
WORDS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
        "seventeen eighteen nineteen twenty".split()

class Num(int):
    "A number, written in digits."
class Count(Num):
    "A small count, written in digits or in words (3 or three)."

def num(lo, hi, kind=Num): return lambda rng: kind(rng.randint(lo, hi))
def pick(xs): return lambda rng: rng.choice(xs)
def time_(rng):
    "A clock time, morning or evening."
    if rng.random() < .5: return f"{rng.randint(1, 11)}:{rng.choice(['00', '15', '30', '45'])} [a.m.|in the morning]"
    return f"{rng.randint(1, 11)}:{rng.choice(['00', '15', '30', '45'])} [p.m.|in the evening]"
UP = dict(verb="[rose|climbed|grew|increased]", noun="[increase|rise|gain|jump]")
DOWN = dict(verb="[fell|dropped|declined|decreased]", noun="[decrease|drop|fall|decline]")
APPROVE = dict(verb="[approved|passed|adopted]", noun="approval of")
REJECT = dict(verb="[rejected|voted down|turned down]", noun="rejection of")

# Each family: slot samplers; `same`: templates that all say the same thing; `neg`: templates that deny it;
# `change`: slots whose value changes the meaning; `swap`: pairs of slots whose exchange changes the meaning;
# `sym`: pairs of slots that may be exchanged WITHOUT changing the meaning (a paraphrase with the words moved).
FAMILIES = [
    dict(slots=dict(p=pick(NAMES), n=num(2, 12, Count), item=pick(ITEMS), shop=pick(SHOPS), day=pick(DAYS)),
         same=["{p} [bought|purchased|picked up] {n} {item} at the {shop} on {day}.",
               "On {day}, {p} [bought|purchased] {n} {item} at the {shop}.",
               "{n} {item} were [bought|purchased] by {p} at the {shop} on {day}.",
               "{p} went to the {shop} on {day} and [bought|got] {n} {item}."],
         neg=["{p} did not [buy|purchase] {n} {item} at the {shop} on {day}.",
              "On {day}, {p} left the {shop} without [buying|purchasing] the {n} {item}."],
         change=["p", "n", "item", "shop", "day"]),
    dict(slots=dict(c=pick(COMPANIES), d=pick([UP, DOWN]), pct=num(2, 40),
                    q=pick(["first", "second", "third", "fourth"])),
         same=["{c} said its [profit|net income] {d[verb]} {pct} percent in the {q} quarter.",
               "In the {q} quarter, {c}'s [profit|net income] {d[verb]} by {pct} percent.",
               "{c} reported a {pct} percent {d[noun]} in {q}-quarter [profit|earnings].",
               "[Profit|Earnings] at {c} {d[verb]} {pct} percent in the {q} quarter, the company said."],
         change=["c", "d", "pct", "q"]),
    dict(slots=dict(t1=pick(TEAMS), t2=pick(TEAMS), s1=num(3, 9), s2=num(0, 2), day=pick(DAYS)),
         same=["The {t1} [beat|defeated] the {t2} {s1}-{s2} on {day}.",
               "On {day}, the {t1} [beat|won against] the {t2} {s1} to {s2}.",
               "The {t2} lost {s1}-{s2} to the {t1} on {day}.",
               "The {t2} were [beaten|defeated] {s1}-{s2} by the {t1} on {day}."],
         change=["s1", "day", "t2"], swap=[("t1", "t2")]),
    dict(slots=dict(a=pick(AIRLINES), c1=pick(CITIES), c2=pick(CITIES), t=time_, day=pick(DAYS)),
         same=["The {a} flight from {c1} to {c2} [leaves|departs] at {t} on {day}.",
               "On {day}, {a}'s {c1}-to-{c2} flight [departs|takes off] at {t}.",
               "{a} [runs|operates] a flight on {day} at {t} from {c1} to {c2}.",
               "The {day} {a} flight to {c2} [leaves|departs] {c1} at {t}."],
         neg=["The {a} flight from {c1} to {c2} on {day} at {t} has been cancelled."],
         change=["a", "t", "day", "c2"], swap=[("c1", "c2")]),
    dict(slots=dict(city=pick(CITIES), w=pick(WEATHER), temp=num(3, 35), day=pick(DAYS)),
         same=["[Forecasters|Meteorologists] expect {w} in {city} on {day}, with a high of {temp} degrees.",
               "{city} [will see|should get] {w} on {day} and temperatures up to {temp} degrees.",
               "On {day}, {city} is forecast to have {w} and a high of {temp} degrees.",
               "Expect {w} and a top temperature of {temp} degrees in {city} on {day}."],
         neg=["[Forecasters|Meteorologists] do not expect {w} in {city} on {day}, "
              "when the high will be {temp} degrees."],
         change=["city", "w", "temp", "day"]),
    dict(slots=dict(body=pick(BODIES), bill=pick(BILLS), y=num(11, 40), n=num(2, 10), dec=pick([APPROVE, REJECT])),
         same=["The {body} {dec[verb]} the {bill} by a vote of {y} to {n}.",
               "By a vote of {y}-{n}, the {body} {dec[verb]} the {bill}.",
               "The {bill} was {dec[verb]} by the {body} in a {y}-{n} vote.",
               "In a {y} to {n} vote, the {bill} was {dec[verb]} by the {body}."],
         change=["body", "bill", "y", "dec"]),
    dict(slots=dict(c=pick(COMPANIES), p=pick(NAMES), role=pick(ROLES), m=pick(MONTHS)),
         same=["{c} [named|appointed] {p} as its new {role} in {m}.",
               "In {m}, {p} was [named|appointed] {role} of {c}.",
               "{p} [became|took over as] {role} at {c} in {m}.",
               "{c} said in {m} that {p} would be its new {role}."],
         neg=["{c} said in {m} that {p} would not be its new {role}."],
         change=["c", "p", "role", "m"]),
    dict(slots=dict(p=pick(NAMES), n=num(55, 99), subj=pick(SUBJECTS)),
         same=["{p} [scored|got] {n} points on the {subj} [exam|test].",
               "On the {subj} [exam|test], {p} [earned|received] {n} points.",
               "{p}'s score on the {subj} [exam|test] was {n} points.",
               "The {subj} [exam|test] gave {p} a score of {n} points."],
         neg=["{p} did not [score|get] {n} points on the {subj} [exam|test]."],
         change=["p", "n", "subj"]),
    dict(slots=dict(an=pick(ANIMALS), n=num(3, 20, Count)),
         same=["[Researchers|Scientists] found that {an} sleep about {n} hours a day.",
               "{an} sleep roughly {n} hours [each|every] day, [researchers|scientists] found.",
               "According to [researchers|scientists], {an} spend around {n} hours a day asleep.",
               "A [study|new study] found that {an} sleep about {n} hours [daily|each day]."],
         change=["an", "n"]),
    dict(slots=dict(dish=pick(DISHES), temp=pick([Num(t) for t in (325, 350, 375, 400, 425)]), n=num(15, 60)),
         same=["[Bake|Cook] the {dish} at {temp} degrees for {n} minutes.",
               "The {dish} should [bake|cook] for {n} minutes at {temp} degrees.",
               "[Put|Place] the {dish} in a {temp}-degree oven for {n} minutes.",
               "For {n} minutes, [bake|cook] the {dish} at {temp} degrees."],
         change=["dish", "temp", "n"]),
    dict(slots=dict(c=pick(COMPANIES), prod=pick(PRODUCTS), m=pick(MONTHS),
                    price=pick([Num(p) for p in range(199, 1200, 100)])),
         same=["{c} [will release|plans to launch] the {prod} in {m} for {price} dollars.",
               "The {prod} from {c} [goes on sale|will be available] in {m}, priced at {price} dollars.",
               "In {m}, {c} [will start selling|will put on sale] its {prod} at a price of {price} dollars.",
               "{c}'s {prod} will [cost|sell for] {price} dollars when it [launches|arrives] in {m}."],
         neg=["{c} will not release the {prod} in {m} for {price} dollars."],
         change=["c", "prod", "m", "price"]),
    dict(slots=dict(p1=pick(NAMES), p2=pick(NAMES), t=time_, day=pick(DAYS)),
         same=["{p1} [will meet|is meeting] {p2} at {t} on {day}.",
               "On {day} at {t}, {p1} and {p2} [will meet|have a meeting].",
               "{p1} and {p2} [are meeting|will get together] on {day} at {t}.",
               "{p1} has a meeting with {p2} on {day} at {t}."],
         neg=["{p1} [cancelled|called off] the meeting with {p2} at {t} on {day}."],
         change=["t", "day", "p2"], sym=[("p1", "p2")]),
    dict(slots=dict(p1=pick(NAMES), p2=pick(NAMES), n=num(20, 900),
                    item=pick(["bike", "car", "guitar", "sofa", "camera", "desk"])),
         same=["{p1} [paid|gave] {p2} {n} dollars for the {item}.",
               "{p2} [received|got] {n} dollars from {p1} for the {item}.",
               "For the {item}, {p1} paid {p2} {n} dollars.",
               "{p2} sold the {item} to {p1} for {n} dollars."],
         change=["n", "item"], swap=[("p1", "p2")]),
    dict(slots=dict(city=pick(CITIES), n=num(120, 950), y=pick([Num(y) for y in range(1990, 2024)])),
         same=["The population of {city} [grew|rose] to {n} thousand in {y}.",
               "In {y}, {city} had {n} thousand [residents|inhabitants|people].",
               "{city} was home to {n} thousand [people|residents] in {y}.",
               "By {y}, {n} thousand people lived in {city}."],
         change=["city", "n", "y"]),
    dict(slots=dict(au=pick(NAMES), b=pick(BOOKS), y=pick([Num(y) for y in range(1950, 2024)])),
         same=["{au} wrote \"{b}\" in {y}.",
               "\"{b}\" was written by {au} in {y}.",
               "In {y}, {au} [published|finished] the [novel|book] \"{b}\".",
               "The [novel|book] \"{b}\" is by {au}, who wrote it in {y}."],
         change=["au", "b", "y"]),
    dict(slots=dict(p1=pick(NAMES), p2=pick(NAMES),
                    adj=pick([("taller", "shorter"), ("older", "younger"), ("faster", "slower")])),
         same=["{p1} is {adj[0]} than {p2}.", "{p2} is {adj[1]} than {p1}.",
               "Compared with {p2}, {p1} is {adj[0]}.", "{p2} is not as {adj_base} as {p1}."],
         change=["p2"], swap=[("p1", "p2")]),
]
BASE = {"taller": "tall", "older": "old", "faster": "fast"}

def render(template, values, rng):
    "Fill the slots (numbers as digits or words), then pick one word of each [a|b|c]."
    vals = {k: WORDS[v] if isinstance(v, Count) and rng.random() < .5 else str(v) if isinstance(v, Num) else v
            for k, v in values.items()}
    if "adj" in vals: vals["adj_base"] = BASE[vals["adj"][0]]
    s = template.format(**vals)
    s = re.sub(r"\[([^\]]*)\]", lambda m: rng.choice(m.group(1).split("|")), s)
    # an 8 percent gain; Halden Labs' profit
    s = re.sub(r"\ba (?=[aeiou]|8|11\b|18\b)", "an ", s.replace("s's ", "s' "))
    return s[0].upper() + s[1:].replace("..", ".")  # 'at 9:30 p.m.' ends a sentence once

def sample(fam, rng):
    "Slot values for one family, with distinct values for slots of the same kind."
    while True:
        v = {k: f(rng) for k, f in fam["slots"].items()}
        pairs = fam.get("swap", []) + fam.get("sym", [])
        if all(v[a] != v[b] for a, b in pairs): return v

def changed(fam, v, rng, n=1):
    "The values `v` with `n` meaning-bearing slots given other values."
    w = dict(v)
    for k in rng.sample(fam["change"], min(n, len(fam["change"]))):
        while w[k] == v[k] or any(w[a] == w[b] for a, b in fam.get("swap", []) + fam.get("sym", [])):
            w[k] = fam["slots"][k](rng)
    return w

def make_pair(rng, paraphrase):
    "One (label, sentence 1, sentence 2): a paraphrase or not, as asked."
    fam = rng.choice(FAMILIES)
    v, (t1, t2) = sample(fam, rng), rng.sample(fam["same"], 2)
    if rng.random() < .2: t2 = t1  # the same wording (synonyms aside)
    if paraphrase:
        w = dict(v)
        for a, b in fam.get("sym", []):
            if rng.random() < .5: w[a], w[b] = v[b], v[a]
        return 1, render(t1, v, rng), render(t2, w, rng)
    r = rng.random()
    if fam.get("neg") and r < .2: return 0, render(t1, v, rng), render(rng.choice(fam["neg"]), v, rng)  # denied
    if fam.get("swap") and r < .35:  # the same words, two roles exchanged
        w, (a, b) = dict(v), rng.choice(fam["swap"])
        w[a], w[b] = v[b], v[a]
        return 0, render(t1, v, rng), render(t2, w, rng)
    n = rng.choice([1, 1, 2, len(fam["change"]), len(fam["change"])])  # one fact changed, two, or all of them
    return 0, render(t1, v, rng), render(t2, changed(fam, v, rng, n), rng)

HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"

def write(path, n, rng, seen, p_paraphrase=0.6):
    "Write `n` distinct pairs not in `seen` to `path` in MRPC's layout, `p_paraphrase` of them paraphrases."
    labels = [i < round(n * p_paraphrase) for i in range(n)]
    rng.shuffle(labels)
    rows = []
    while len(rows) < n:
        label, a, b = make_pair(rng, labels[len(rows)])
        if (a, b) in seen or a == b: continue
        seen.add((a, b))
        rows.append(f"{label}\t{rng.randint(100000, 3999999)}\t{rng.randint(100000, 3999999)}\t{a}\t{b}\n")
    Path(path).write_text(HEADER + "".join(rows), encoding="utf-8")
    return rows

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "paraphrase_demo"  # or another folder
    rng, seen = random.Random(2019), set()
    out.mkdir(exist_ok=True)
    for split, n in (("train", 640), ("dev", 160)):
        rows = write(out / f"{split}.tsv", n, rng, seen)
        print(f"{out / f'{split}.tsv'}: {n} pairs, {sum(r[0] == '1' for r in rows)} paraphrases")
