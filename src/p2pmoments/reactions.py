"""What a reaction may be: exactly one emoji (issue 10, item 21).

One emoji is one extended grapheme cluster (UAX #29) that is an emoji by Unicode's own
properties (UTS #51 section 1.4): an emoji character, possibly with U+FE0F or a skin
tone; a flag (two regional indicators); a keycap; a tag sequence (subdivision flags);
or a ZWJ sequence of emoji characters. The `regex` package supplies both the grapheme
rule (\\X) and the properties from the Unicode database, so new emoji need no list here.
Not in core/: importing `regex` loads `threading`, which the core may not (test_purity).
"""

from __future__ import annotations

import regex

from p2pmoments.errors import UserInputError

__all__ = ["check_emoji"]

# An emoji character: Emoji and Extended_Pictographic (so not a bare digit, # or *).
_CHARACTER = r"(?=\p{Emoji})\p{Extended_Pictographic}"
_ELEMENT = rf"{_CHARACTER}(?:\uFE0F|\p{{Emoji_Modifier}})?"
_TAGS = r"[\U000E0020-\U000E007E]+\U000E007F"
_EMOJI = regex.compile(
    r"\p{Regional_Indicator}{2}"  # a flag
    r"|[0-9#*]\uFE0F?\u20E3"  # a keycap
    rf"|{_ELEMENT}(?:{_TAGS})?(?:\u200D{_ELEMENT})*"  # one, tagged, or joined by ZWJ
)
_ONE_GRAPHEME = regex.compile(r"\X")


def check_emoji(text: str) -> str:
    """`text` without outer spaces if it is exactly one emoji; UserInputError otherwise."""
    emoji = text.strip()
    if _ONE_GRAPHEME.fullmatch(emoji) is None or _EMOJI.fullmatch(emoji) is None:
        raise UserInputError(f"a reaction is one emoji, like 🎉 or 👍🏽 (not {text!r})")
    return emoji
