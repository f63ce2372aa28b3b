"""Every relative link and #anchor of the documentation leads somewhere.

Run by scripts/test/docs-links.sh. Reads Markdown files (arguments, relative to
the repository root, which is the working directory) and checks each link
`[text](target)`, image `![alt](target)`, reference `[name]: target` and HTML
`href`/`src` outside code: the target file or directory exists in the
repository, and an `#anchor` names a heading of the target Markdown file (slugs
as GitHub makes them: lowercase, spaces to '-', punctuation dropped, '-1',
'-2'... for repeated headings) or an `id`/`name` set in it; `#L12` and
`#L12-L20` on other files name lines that exist. Links with a scheme
(`https:`, `mailto:`) are not followed.

EXPECTED (environment, space-separated paths): files that are not there yet
but will be; a link to one of them passes, and an anchor in one is left
unchecked (reported). Prints one line per dead link and `N passed, M failed`.

The checker first checks itself on a made-up set of pages (good links must
pass, each kind of dead link must fail); `--self-test` does only that. Each
link is one check, and each of the two self-checks one more.
"""

import os
import re
import sys
import tempfile
import unicodedata
from urllib.parse import unquote

FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*$")
# [text](target "title") and ![alt](target); the text may hold one level of brackets.
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")
HTML_LINK = re.compile(r"<(?:a|img|source)\b[^>]*?\b(?:href|src|srcset)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
HTML_ID = re.compile(r"<[a-z][^>]*?\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
LINE_ANCHOR = re.compile(r"^L(\d+)(?:-L(\d+))?$")


def strip_code_spans(line):
    """The line with `code spans` blanked out (links inside them are text)."""
    return re.sub(r"(`+)(.+?)\1", lambda m: " " * len(m.group(0)), line)


def heading_text(raw):
    """What GitHub renders of a heading's Markdown: no markup, no closing #s."""
    text = re.sub(r"[ \t]+#+[ \t]*$", "", raw)
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"`+", "", text)
    text = re.sub(r"(\*\*|__|\*|~~)", "", text)
    return text


def slug(text):
    """GitHub's anchor for a heading: lowercase, letters, digits, marks, '-' and
    '_' kept, every space to '-', everything else dropped."""
    kept = []
    for ch in text.strip().lower():
        if ch == " ":
            kept.append("-")
        elif ch in "-_" or ch.isalnum() or unicodedata.category(ch).startswith("M"):
            kept.append(ch)
    return "".join(kept)


def scan(path):
    """(anchors, links) of a Markdown file; links are (line number, target)."""
    anchors, links, seen = set(), [], {}
    fence = None
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            opening = FENCE.match(line)
            if fence:
                if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                    fence = None
                continue
            if opening:
                fence = opening.group(1)
                continue
            heading = HEADING.match(line)
            if heading:
                base = slug(heading_text(heading.group(2)))
                count = seen.get(base, 0)
                seen[base] = count + 1
                anchors.add(base if count == 0 else f"{base}-{count}")
            anchors.update(HTML_ID.findall(line))
            for target in links_in(line):
                links.append((number, target))
    return anchors, links


def links_in(line):
    text = strip_code_spans(line)
    found = INLINE.findall(text) + HTML_LINK.findall(text)
    reference = REFERENCE.match(text)
    if reference:
        found.append(reference.group(1))
    return found


def check_files(files, expected=()):
    """Checks every link of the files; returns (passed, failed, messages)."""
    expected = {os.path.normpath(p) for p in expected}
    cache = {}

    def anchors_of(path):
        if path not in cache:
            cache[path] = scan(path)[0]
        return cache[path]

    passed, failed, messages = 0, 0, []
    for source in files:
        if not os.path.isfile(source):
            failed += 1
            messages.append(f"{source}: no such file")
            continue
        _, links = scan(source)
        for number, target in links:
            where = f"{source}:{number}: {target}"
            if SCHEME.match(target) or target.startswith("//"):
                continue  # not a relative link: not followed
            path_part, _, anchor = target.partition("#")
            path_part, anchor = unquote(path_part.split("?")[0]), unquote(anchor)
            if path_part.startswith("/"):
                resolved = os.path.normpath(path_part.lstrip("/"))
            else:
                resolved = os.path.normpath(os.path.join(os.path.dirname(source), path_part or os.path.basename(source)))
            if resolved.startswith(".."):
                failed += 1
                messages.append(f"{where}: leads out of the repository")
                continue
            if not os.path.exists(resolved):
                if resolved in expected:
                    passed += 1
                    if anchor:
                        messages.append(f"{where}: expected file not there yet, anchor not checked")
                    continue
                failed += 1
                messages.append(f"{where}: no file {resolved}")
                continue
            if anchor:
                if os.path.isdir(resolved):
                    failed += 1
                    messages.append(f"{where}: an anchor on a directory")
                    continue
                if resolved.endswith(".md"):
                    if anchor not in anchors_of(resolved):
                        failed += 1
                        messages.append(f"{where}: no heading or id '{anchor}' in {resolved}")
                        continue
                else:
                    lines = LINE_ANCHOR.match(anchor)
                    with open(resolved, encoding="utf-8", errors="replace") as file:
                        count = sum(1 for _ in file)
                    if not lines or int(lines.group(2) or lines.group(1)) > count:
                        failed += 1
                        messages.append(f"{where}: no line '{anchor}' in {resolved} ({count} lines)")
                        continue
            passed += 1
    return passed, failed, messages


def self_test():
    """The checker passes good links and catches each kind of dead one."""
    pages = {
        "README.md": "# Top\n\n## What's new, in `v2`?\n\n## What's new, in `v2`?\n\n"
                     "[a](docs/a.md) [b](docs/a.md#first-steps) [c](#whats-new-in-v2)\n"
                     "[d](#whats-new-in-v2-1) ![e](img/x.png) [f](https://example.invalid/nowhere)\n"
                     "[g](docs/coming.md) [h](script.sh#L2) [i](docs/a.md#custom)\n"
                     "`[not a link](nowhere.md)`\n\n```\n[nor this](nowhere.md)\n```\n",
        "docs/a.md": "# First steps\n\n<a id=\"custom\"></a>\n[back](../README.md#top)\n",
        "img/x.png": "",
        "script.sh": "one\ntwo\n",
        "BAD.md": "[1](docs/missing.md) [2](docs/a.md#missing) [3](#nowhere)\n"
                  "[4](../outside.md) [5](script.sh#L9) [6](img/y.png) [7](docs/coming.md#soon)\n",
    }
    results = []
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as root:
        for name, text in pages.items():
            os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
            with open(os.path.join(root, name), "w", encoding="utf-8") as file:
                file.write(text)
        os.chdir(root)
        try:
            good = check_files(["README.md", "docs/a.md"], expected=["docs/coming.md"])
            bad = check_files(["BAD.md"])
        finally:
            os.chdir(cwd)
    results.append(("good links pass (files, anchors, repeated headings, ids, images, line anchors, expected files)",
                    good[:2] == (9, 0), f"{good[0]} passed, {good[1]} failed {good[2]}"))
    results.append(("each kind of dead link fails (file, anchor, own anchor, outside, line, image, unexpected file)",
                    bad[:2] == (0, 7), f"{bad[0]} passed, {bad[1]} failed"))
    passed = 0
    for what, ok, detail in results:
        print(f"  {'ok   ' if ok else 'FAIL '} checker: {what}" + ("" if ok else f": {detail}"))
        passed += ok
    return passed, len(results) - passed


def main(argv):
    """Checks the checker, then the files; one summary line for both."""
    passed, failed = self_test()
    if argv[:1] != ["--self-test"]:
        expected = os.environ.get("EXPECTED", "").split()
        links_passed, links_failed, messages = check_files(argv, expected)
        for message in messages:
            print(f"  {'note ' if 'not checked' in message else 'FAIL '} {message}")
        print(f"  {'ok   ' if links_failed == 0 else 'FAIL '} {links_passed} of "
              f"{links_passed + links_failed} relative links in {len(argv)} files lead somewhere")
        passed, failed = passed + links_passed, failed + links_failed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
