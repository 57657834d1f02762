#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/corpus.jsonl: one JSON string per line, chosen to hit the
corners of tokenizer.json handling (whitespace runs, digits, scripts, emoji sequences, combining
marks, control characters, literal special-token text, long repeats). Deterministic: the same
file comes out every run, so the recorded reference ids stay valid.

usage: python3 tests/ref/make_corpus.py [OUT]"""
import json
import os
import sys

BASE = [
    # empty and whitespace alone
    "", " ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\n\n", " \n", "\n ", " \n ", "\t\t", " \t ",
    "\u00a0", "\u3000", "\u2003", "\u0085", "\u1680", "\u2028", "\u2029", "\u202f", "\u205f",
    "\u000b", "\u000c", "\u001c", "\u180e", "\u200b",
    # plain text
    "Hello", "Hello world", "hello world", "HELLO WORLD", "Hello, world!", "Hello world.",
    "The quick brown fox jumps over the lazy dog.", "A", "a", "I", "I'm", "I am",
    "This is a test of the tokenizer.", "What's up?", "Don't stop me now",
    "they're", "We'LL", "YOU'RE", "it'S", "I'D", "she'd've", "o'clock", "rock'n'roll",
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'Re", "'VE", "'M", "'LL", "'D",
    "it'\u017f", "''", "'", "' s", "'x",
    # whitespace runs inside text
    "a  b", "a   b", "a    b", " a", "  a", "a ", "a  ", " a ", "  leading", "trailing  ",
    "x\n\ny", "x\n\n\ny", "line1\nline2", "line1\r\nline2", "tab\tseparated\tvalues",
    "  indented\n    more\n", "a \n b", "a\n \nb", "end\n", "\nstart", "a\t\n\t b",
    "word \u00a0word", "word\u3000word", "sp\u2003ace", "x \u0085 y",
    # digits and numbers
    "0", "1", "12", "123", "1234", "12345", "1234567", "3.14159", "1,000,000", "-42", "+7",
    "2024-01-15", "10:30pm", "v1.2.3", "0x1F", "1e-9", "99 bottles", "a1b2c3", "1st 2nd 3rd",
    "\u0663\u0664\u0665", "\u2460\u2461\u2462", "\u00bd", "\u216b", "\u00b2\u00b3", "\uff11\uff12",
    # punctuation
    "!!!", "...", "?!", "!?", "--", "---", "(a)", "[b]", "{c}", "<d>", "\"quoted\"", "'single'",
    "@user", "#hashtag", "$100", "50%", "a&b", "a|b", "a\\b", "~/path", "`code`", "^_^",
    "\u00bfQu\u00e9?", "\u00a1Hola!", "\u2014em dash\u2014", "\u201csmart quotes\u201d", "\u2026",
    # code
    "def f(x):\n    return x * 2\n", "int main(void) { return 0; }",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}", "if x == 1 and y != 2:",
    "{\"key\": [1, 2, 3], \"b\": null}", "<div class=\"x\">hi</div>", "SELECT * FROM t WHERE a>1;",
    "#include <stdio.h>", "x = lambda a, b: a**b", "console.log('hi');", "a->b->c",
    "std::vector<int> v;", "fn main() -> Result<(), E> {}", "    ", "\t\tindent",
    "/* comment */", "// line comment", "    return None\n\n\n", "s/foo/bar/g",
    "^\\s*(\\d+)$", "$ ls -la | grep .txt", "import numpy as np",
    # URLs and mail
    "https://example.com/path?q=1&r=two#frag", "http://localhost:8080/", "user@example.org",
    "www.test.co.uk", "ftp://files.example.net/a_b-c.tar.gz",
    # CJK
    "\u4f60\u597d", "\u4f60\u597d\uff0c\u4e16\u754c\uff01", "\u4e2d\u6587\u6d4b\u8bd5",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", "\u3053\u3093\u306b\u3061\u306f",
    "\u30ab\u30bf\u30ab\u30ca", "\ud55c\uad6d\uc5b4", "\uc548\ub155\ud558\uc138\uc694",
    "\u9f8d\u9f98", "\u3400\u4dbf", "\U00020000\U0002a6d6", "\u3002\u3001",
    # emoji
    "\U0001f44d", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f3f3\ufe0f\u200d\U0001f308", "\U0001f1eb\U0001f1f7", "1\ufe0f\u20e3", "\u2764\ufe0f",
    "\U0001f600\U0001f601\U0001f602", "I \u2764 NY", "ok \U0001f44c\U0001f3ff done",
    "\U0001f9d1\U0001f3fb\u200d\U0001f4bb", "\U0001f600 \U0001f600", "\u263a",
    # combining marks
    "e\u0301", "caf\u00e9", "cafe\u0301", "n\u0308", "a\u0300\u0301\u0302",
    "Z\u0334\u0321a\u0336l\u0337g\u0335o\u0338", "\u0915\u094d\u0937", "\u0928\u092e\u0938\u094d\u0924\u0947",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35", "\u05e9\u05c1\u05b8\u05dc\u05d5\u05b9\u05dd", "\u0301",
    " \u0301", "\u0301a",
    # other scripts
    "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440", "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645", "\u05e9\u05dc\u05d5\u05dd",
    "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0", "\u0532\u0561\u0580\u0565\u0582",
    "\u1200\u1208", "\u00c5ngstr\u00f6m", "Stra\u00dfe", "\u0130stanbul", "\u01c5", "\ufb01nance",
    "\u1e9e", "\u017f", "\u212a", "\u00b5",
    # control characters and invisibles
    "\x01", "\x01\x02\x03", "\x7f", "\x1b[31mred\x1b[0m", "a\x08b", "\ufeffBOM", "zero\u200bwidth",
    "join\u200dme", "\u200e\u200f", "\ue000", "\U0010fffd", "\U000e0001", "\uffff", "\ufffd",
    "nul\x00byte", "\x00",
    # literal special-token text
    "<s>", "</s>", "<unk>", "<s>Hello", "Hello</s>", " <s> ", "<s><s>", "<s> </s>",
    "a<s>b", "<s>\n", "</s>hi", "<unk><unk>", "< s>", "<s", "s>", "<S>", "<<s>>",
    "<|endoftext|>", "text<|endoftext|>more", "<|begin_of_text|>Hi", "<|end_of_text|>",
    "<|bos|>", "<mask>", "a <mask> b", "a<mask>b", "  <mask>  x", "hello_sw", "say hello_sw now",
    "xhello_sw", "hello_swx", "[TOOL]", "call [TOOL] now", "foo_bar", "a foo_bar b",
    "<|im_start|>user\nhi<|im_end|>", "<0x41>", "<0xE2>", "\u2581", "\u2581\u2581a", "a\u2581b",
    # mixed scripts
    "Hello\u4e16\u754c", "abc\u0430\u0431\u0432\u03b1\u03b2\u03b3", "100\u5143", "iPhone\u624b\u673a",
    "\u6771\u4eac2020", "Caf\u00e9 \u043c\u0438\u0440 \u4e16\u754c \U0001f30d",
]

LONG = [
    "a" * 1000, "ab " * 300, " " * 500, "\n" * 100, "\U0001f642" * 100, "123" * 200,
    "hello world " * 100, "\u4f60\u597d" * 200, "=" * 300, "\t \n" * 50, "e\u0301" * 100,
    ("The quick brown fox. " * 40).strip(),
]


def variants(s):
    return [s, " " + s, s + " ", "  " + s + "\n", "x" + s + "y"]


def build():
    out = list(BASE) + LONG
    seeds = ["Hello world", "I'm", "123", "\u4f60\u597d", "\U0001f44d\U0001f3fd", "<s>",
             "e\u0301", "https://x.y/z", "\t", "don't", "a  b", "\u2581", "<mask>"]
    for s in seeds:
        out.extend(variants(s))
    seen, uniq = set(), []
    for s in out:
        if s not in seen:
            seen.add(s)
            uniq.append(s)
    return uniq


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        here, "..", "fixtures", "tokenizer", "corpus.jsonl")
    strings = build()
    with open(path, "w", encoding="ascii") as f:
        for s in strings:
            f.write(json.dumps(s, ensure_ascii=True) + "\n")
    print(f"{len(strings)} strings -> {path}")


if __name__ == "__main__":
    main()
