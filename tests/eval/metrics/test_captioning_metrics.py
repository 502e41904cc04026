import contextlib
import io
import random
import shutil

import pytest
import torch

from vlmkit.eval.metrics import BLEU4, CIDErD, cider_d, ptb_tokenize

# Six images with five references each, already tokenized (lower case, PTB clitics split, no punctuation).
CANDIDATES = [
    "a man riding a wave on top of a surfboard",
    "a cat sitting on a laptop keyboard",
    "two giraffes standing in a field",
    "a plate of food with broccoli and rice",
    "a red bus",
    "a dog does n't like the water",
]
REFERENCES = [
    [
        "a man riding a wave on top of a surfboard",
        "a surfer rides a large wave in the ocean",
        "a person on a surfboard riding a wave",
        "a man surfing on a big blue wave",
        "surfer in a wetsuit riding a wave",
    ],
    [
        "a cat laying on top of a laptop computer",
        "an orange cat sitting on a keyboard",
        "a cat is resting on an open laptop",
        "a cat 's paw on a laptop keyboard",
        "a kitten sleeping on a computer",
    ],
    [
        "two giraffes standing next to each other in a field",
        "a pair of giraffes in a grassy field",
        "giraffes standing near trees on a sunny day",
        "two tall giraffes in the wild",
        "a couple of giraffes eating leaves from a tree",
    ],
    [
        "a plate with rice broccoli and chicken",
        "a white plate topped with food and vegetables",
        "a meal of rice and broccoli on a plate",
        "a dish of chicken rice and steamed broccoli",
        "food on a plate including broccoli",
    ],
    [
        "a red double decker bus driving down the street",
        "a big red bus on a city street",
        "a double decker bus parked at a stop",
        "a red bus with people on the top deck",
        "a london bus driving past buildings",
    ],
    [
        "a dog standing in shallow water",
        "a wet dog in a lake",
        "a black dog playing in the water",
        "the dog does n't want to swim",
        "a dog near the water 's edge",
    ],
]


def pycocoevalcap_scores(candidates, references):
    """CIDEr-D (corpus and per image) and BLEU-4 from pycocoevalcap on already tokenized captions."""
    cider = pytest.importorskip("pycocoevalcap.cider.cider")
    bleu = pytest.importorskip("pycocoevalcap.bleu.bleu")
    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [cand] for i, cand in enumerate(candidates)}
    corpus_cider, image_cider = cider.Cider().compute_score(gts, res)
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its counts
        bleus, _ = bleu.Bleu(4).compute_score(gts, res)
    return float(corpus_cider), [float(s) for s in image_cider], bleus[3]


@pytest.mark.parametrize("tokenizer", ["whitespace", "ptb"])  # PTB leaves tokenized text unchanged
def test_matches_pycocoevalcap(tokenizer):
    corpus_cider, image_cider, bleu4 = pycocoevalcap_scores(CANDIDATES, REFERENCES)
    cider_metric, bleu_metric = CIDErD(tokenizer=tokenizer), BLEU4(tokenizer=tokenizer)
    for start in (0, 2, 5):  # uneven batches
        stop = {0: 2, 2: 5, 5: 6}[start]
        cider_metric.update(CANDIDATES[start:stop], REFERENCES[start:stop])
        bleu_metric.update(CANDIDATES[start:stop], REFERENCES[start:stop])
    assert float(cider_metric.compute()) == pytest.approx(corpus_cider, abs=1e-6)
    assert float(bleu_metric.compute()) == pytest.approx(bleu4, abs=1e-6)
    per_image = cider_d([c.split() for c in CANDIDATES], [[r.split() for r in refs] for refs in REFERENCES])
    assert per_image == pytest.approx(image_cider, abs=1e-6)


def test_bleu_brevity_penalty_by_hand():
    metric = BLEU4(tokenizer="whitespace")
    metric.update(["a b c d"], [["a b c d e f g h"]])  # all n-grams match; BP = exp(1 - 8 / 4)
    assert float(metric.compute()) == pytest.approx(torch.e**-1, abs=1e-8)


def test_bleu_closest_reference_length_ties_to_the_shorter():
    metric = BLEU4(tokenizer="whitespace")
    metric.update(["a b c d e"], [["a b c d", "a b c d e f"]])  # lengths 4 and 6 are both 1 away: 4, no penalty
    assert float(metric.compute()) == pytest.approx(1.0, abs=1e-8)


def test_cider_of_a_single_image_corpus_is_zero():
    metric = CIDErD()  # every n-gram's idf is log(1 / 1) = 0
    metric.update(["a dog"], [["a dog"]])
    assert float(metric.compute()) == 0.0


def test_cider_penalizes_length_difference():
    long_candidate = CIDErD(tokenizer="whitespace")
    long_candidate.update([CANDIDATES[0] + " in the ocean on a sunny day"] + CANDIDATES[1:], REFERENCES)
    exact = CIDErD(tokenizer="whitespace")
    exact.update(CANDIDATES, REFERENCES)
    assert float(long_candidate.compute()) < float(exact.compute())


def test_tokenizer_is_applied_to_raw_captions():
    raw = CIDErD()
    raw.update(["A dog doesn't like the water."], [["The dog doesn't want to swim!", "A wet dog."]])
    raw.update(["Two cats."], [["Two cats, sleeping.", "A pair of cats"]])
    tokenized = CIDErD(tokenizer="whitespace")
    tokenized.update(["a dog does n't like the water"], [["the dog does n't want to swim", "a wet dog"]])
    tokenized.update(["two cats"], [["two cats sleeping", "a pair of cats"]])
    assert float(raw.compute()) == pytest.approx(float(tokenized.compute()), abs=1e-12)


def test_empty_corpus_and_bad_arguments():
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert float(CIDErD().compute()) == 0.0
    with pytest.raises(ValueError, match="tokenizer"):
        CIDErD(tokenizer="spacy")
    with pytest.raises(ValueError, match="1 predictions but 2"):
        BLEU4().update(["a"], [["a"], ["b"]])


# Raw COCO-style captions (one candidate + five references per image) with the punctuation, case,
# clitics, quotes, brackets and symbols that the Java tokenizer normalises.
RAW_IMAGES = [
    [
        "A man riding a wave on top of a surfboard.",
        "A surfer's riding a BIG wave -- it's huge!",
        "Someone (a pro?) surfs in Hawaii, on a 10-foot wave.",
        'A "surfer" on his board; the water is blue.',
        "The man isn't falling off the surf-board...",
        "A person surfing at 5 p.m. near the U.S. coast",
    ],
    [
        "A cat's paw resting on a laptop's keyboard.",
        "An orange & white cat sitting on a laptop",
        "The cat won't move from the keyboard!",
        "A kitten [asleep] on a Mac laptop.",
        "Cat on a laptop: typical.",
        "A cat laying on top of a laptop computer",
    ],
    [
        "Two giraffes standing next to each other in a field",
        "A pair of giraffes in a grassy field, eating.",
        "Giraffes' necks are very long.",
        "2 tall giraffes at the zoo (San Diego)",
        "Two giraffes... and a tree!",
        "A couple of giraffes eating leaves from a tree; sunny day.",
    ],
    [
        "A plate of food with broccoli, carrots, and rice.",
        "There's rice & broccoli on a white plate",
        "A meal w/ chicken, rice and veggies",
        "A dish that's full of steamed broccoli.",
        "Healthy food: rice, broccoli, chicken, etc.",
        "Food on a plate, including 1/2 a lemon",
    ],
    [
        "A red double-decker bus drives down the street!",
        "A London bus (route #73) passing buildings.",
        "The bus is red; it's a double decker.",
        "A big red bus on a city street",
        "People on the bus's top deck",
        "A double-decker bus parked at a stop, 8:30 am",
    ],
    [
        "A dog that's laying on a couch next to a pillow.",
        "The dog doesn't want to get off the sofa!",
        "A brown dog sleeping on a couch",
        "A pup on a red couch -- so cute :)",
        "A dog's head on a pillow.",
        "Dog resting on the living room's sofa",
    ],
]


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("java") is None, reason="the reference tokenizer needs Java")
def test_tokenizer_and_scores_match_pycocoevalcap_java_pipeline():
    ptb = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    captions = {(i, j): [{"caption": text}] for i, image in enumerate(RAW_IMAGES) for j, text in enumerate(image)}
    java_tokens = ptb.PTBTokenizer().tokenize(captions)  # one JVM run for every caption
    for key, (tokenized,) in java_tokens.items():
        assert ptb_tokenize(captions[key][0]["caption"]) == tokenized.split(), captions[key][0]["caption"]

    candidates = [java_tokens[i, 0][0] for i in range(len(RAW_IMAGES))]
    references = [[java_tokens[i, j][0] for j in range(1, 6)] for i in range(len(RAW_IMAGES))]
    corpus_cider, _, bleu4 = pycocoevalcap_scores(candidates, references)
    cider_metric, bleu_metric = CIDErD(), BLEU4()
    for image in RAW_IMAGES:
        cider_metric.update([image[0]], [image[1:]])
        bleu_metric.update([image[0]], [image[1:]])
    assert float(cider_metric.compute()) == pytest.approx(corpus_cider, abs=1e-6)
    assert float(bleu_metric.compute()) == pytest.approx(bleu4, abs=1e-6)


# Captions with the tokens where PTB rules matter most: times, currency, numbers, URLs, e-mails, emoticons,
# quotes, abbreviations, unicode; the candidate and the references of an image share a scene.
_SCENES = [
    ("A clock on a tower", "shows"),
    ("A menu board", "lists"),
    ("A phone screen", "displays"),
    ("A street sign", "says"),
    ("A receipt", "reads"),
]
_DETAILS = [
    "12:45pm", "10:30am", "1:05PM.", "9:15 AM", "7:30p.m.", "noon", "$3.50", "US$5", "£10", "€20", "5¢", "1,000",
    "50%", "1/2", "3 1/2", "½", "2nd", "'90s", "http://x.com/a?b=c", "www.cafe.com", "bob@example.com", "#dog",
    "@user", ":)", ":-(", "^_^", '"open"', "‘closed’", "don't", "it's", "U.S.", "Mr.", "St.", "p.m.", "etc.",
    "AT&T", "Q&A", "café", "東京", "😀", "°C", "—", "...", "(555) 123-4567", "black-and-white", "24/7",
]  # fmt: skip


def _time_heavy_images(num_images=40, seed=0):
    rng = random.Random(seed)
    images = []
    for _ in range(num_images):
        subject, verb = rng.choice(_SCENES)
        shared = rng.sample(_DETAILS, 3)
        captions = []
        for _ in range(6):  # candidate + 5 references
            details = rng.sample(shared, 2) + ([rng.choice(_DETAILS)] if rng.random() < 0.5 else [])
            captions.append(f"{subject} {verb} {' and '.join(details)}" + rng.choice([".", "", "!", " :)"]))
        images.append(captions)
    return images


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("java") is None, reason="needs `java` on PATH: the reference tokenizer is Java")
def test_scores_match_pycocoevalcap_java_pipeline_on_times_and_symbols():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    images = _time_heavy_images()
    gts = PTBTokenizer().tokenize({i: [{"caption": c} for c in image[1:]] for i, image in enumerate(images)})
    res = PTBTokenizer().tokenize({i: [{"caption": image[0]}] for i, image in enumerate(images)})
    corpus_cider, _ = Cider().compute_score(gts, res)
    with contextlib.redirect_stdout(io.StringIO()):
        bleus, _ = Bleu(4).compute_score(gts, res)
    cider_metric, bleu_metric = CIDErD(), BLEU4()
    for start in range(0, len(images), 7):  # uneven batches
        batch = images[start : start + 7]
        cider_metric.update([image[0] for image in batch], [image[1:] for image in batch])
        bleu_metric.update([image[0] for image in batch], [image[1:] for image in batch])
    assert corpus_cider > 0.5 and bleus[3] > 0.1  # a corpus that scores
    assert float(cider_metric.compute()) == pytest.approx(corpus_cider, abs=1e-6)
    assert float(bleu_metric.compute()) == pytest.approx(bleus[3], abs=1e-6)
