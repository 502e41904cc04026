import pytest

from vlmkit.eval.metrics import ptb_tokenize

# Expected outputs: Stanford PTBTokenizer 3.4.1 (-preserveLines -lowerCase, the jar in pycocoevalcap 1.2)
# followed by pycocoevalcap's punctuation filter, recorded from the Java tool.
JAVA_OUTPUTS = [
    ("A man's dog doesn't like the U.S. flag.", "a man 's dog does n't like the u.s. flag"),
    (
        "Two dogs' toys (red) and [blue] {green} are \"nice\" & 'cool'.",
        "two dogs toys -lrb- red -rrb- and -lsb- blue -rsb- -lcb- green -rcb- are nice & cool",
    ),
    (
        "It's 3:30 p.m. and costs $3.50, or 1,000 yen -- 50% off...",
        "it 's 3:30 p.m. and costs $ 3.50 or 1,000 yen 50 % off",
    ),
    (
        "A black-and-white photo of a t-shirt; e-mail him/her at foo@bar.com!",
        "a black-and-white photo of a t-shirt e-mail him/her at foo@bar.com!",
    ),
    (
        "I can't, won't, cannot; gonna wanna dont isnt they're we've I'll he'd I'm.",
        "i ca n't wo n't can not gon na wan na dont isnt they 're we 've i 'll he 'd i 'm",
    ),
    (
        "The colour of the centre is grey\u2026 \u201cquoted\u201d \u2018single\u2019 \u2013 dash \u2014 em",
        "the colour of the centre is grey quoted single dash em",
    ),
    (
        "Mr. Smith went to Washington D.C. at 5 a.m. on Jan. 3rd, 2010.",
        "mr. smith went to washington d.c. at 5 a.m. on jan. 3rd 2010",
    ),
    (
        "a*b + c = d # tag ~ tilde ^ caret | pipe < less > more \u00bd \u00a35 \u20ac10",
        "a * b + c = d # tag ~ tilde ^ caret | pipe < less > more 1/2 # 5 $ 10",
    ),
    ("O'Neil's rock'n'roll o'clock y'all 'tis '90s '", "o'neil 's rock 'n' roll o'clock y' all 't is '90s"),
    ("There are 2.5 people... and 3...4 things!? Really?!", "there are 2.5 people and 3 4 things !? really ?!"),
    ("A dog wearing a Santa hat :)", "a dog wearing a santa hat :-rrb-"),
    ("Bananas are $1.99/lb at this store.", "bananas are $ 1.99 / lb at this store"),
    ("Here's a bowl of ramen \U0001f35c with chopsticks.", "here 's a bowl of ramen with chopsticks"),
    ("The picture a. and b. here, plan a. The end", "the picture a. and b. here plan a the end"),
    ("See No. 5 and fig. 2, not no. or fig.", "see no. 5 and fig. 2 not no or fig"),
    (
        "hello,world and cats.dogs and 3x4 and 10-year-old #1 @user http://x.com/a?b=c",
        "hello world and cats.dogs and 3x4 and 10-year-old # 1 @user http://x.com/a?b=c",
    ),
    ("AT&T and Q&A but rock&roll; US$5 and 5'10 and x_y", "at&t and q&a but rock & roll us$ 5 and 5 '10 and x_y"),
    ("The kids\u2019 room, it\u2019s John\u2019s; the boys'", "the kids room it 's john 's the boys"),
]


@pytest.mark.parametrize(("text", "expected"), JAVA_OUTPUTS)
def test_matches_java_ptb_tokenizer(text, expected):
    assert ptb_tokenize(text) == expected.split()


@pytest.mark.parametrize(
    "tokens",
    [
        "a man 's dog does n't like the u.s. flag",
        "two dogs toys -lrb- red -rrb- and -lsb- blue -rsb- are nice & cool",
        "it 's 3:30 p.m. and costs $ 3.50 or 1,000 yen 50 % off",
        "i ca n't wo n't can not gon na wan na dont isnt they 're we 've i 'll he 'd i 'm",
    ],
)
def test_tokenized_text_is_unchanged(tokens):  # as the Java tokenizer leaves these lines
    assert ptb_tokenize(tokens) == tokens.split()


@pytest.mark.parametrize("text", ["", "   ", "...", "?!?", "\U0001f600", "-- ; :"])
def test_degenerate_input(text):
    assert all(isinstance(token, str) and token for token in ptb_tokenize(text))
