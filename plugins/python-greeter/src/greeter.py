"""The logic of the python-greeter plugin, free of any WebAssembly bindings.

Everything here is plain Python (JSON strings in, JSON strings out), so it can be unit tested with any
Python 3 on the host: `python3 -m unittest discover -s tests` from the plugin's folder.
"""

import json
from typing import List, Optional, Tuple

# Messenger accepts at most 13 quick replies per message, with titles of at most 20 characters.
MAX_QUICK_REPLIES = 13
MAX_TITLE_CHARS = 20
# The text sent with the quick replies when the output has no text message to attach them to.
CHOOSE_TEXT = "Choose one:"
# The key the plugin sets in the session storage object once it has handled the first output of a session.
GREETED_KEY = "greeted"


def to_json(value) -> str:
    """Compact JSON, non-ASCII characters kept as they are."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def first_name(profile: Optional[str]) -> Optional[str]:
    """The user's first name from the profile JSON, or None when unknown or blank."""
    if not profile:
        return None
    try:
        value = json.loads(profile)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    name = value.get("first_name")
    if not isinstance(name, str) or not name.strip():
        return None
    return name.strip()


def parse_state(stored: Optional[str]) -> Tuple[Optional[dict], bool]:
    """Interprets the session storage value.

    Returns (state, usable): `state` is the stored JSON object ({} when nothing was stored yet) and
    `usable` is False when the stored value is not a JSON object (another plugin's data, say), which the
    greeter then leaves alone.
    """
    if stored is None:
        return {}, True
    try:
        value = json.loads(stored)
    except ValueError:
        return None, False
    if not isinstance(value, dict):
        return None, False
    return value, True


def needs_greeting_step(state: dict) -> bool:
    """True on the first output of a session: the greeting step has not run yet."""
    return GREETED_KEY not in state


def greeting_message(name: str) -> str:
    """The Send API message greeting the user."""
    return to_json({"text": "Hi " + name + "!"})


def quick_replies(data: Optional[str]) -> Tuple[List[dict], List[str]]:
    """The Messenger quick replies for the `choices` in an output's data.

    `choices` is a JSON list of strings (title and payload alike) or of {"title", "payload"} objects
    (payload defaults to the title). Returns (quick_replies, problems): at most 13 replies, titles cut to
    20 characters; `problems` describes entries that were skipped, for the log.
    """
    problems: List[str] = []
    if not data:
        return [], problems
    try:
        value = json.loads(data)
    except ValueError:
        return [], ["output data is not valid JSON"]
    if not isinstance(value, dict) or "choices" not in value:
        return [], problems
    choices = value["choices"]
    if not isinstance(choices, list):
        return [], ["'choices' is not a list"]
    replies: List[dict] = []
    for index, choice in enumerate(choices):
        if isinstance(choice, str):
            title, payload = choice, choice
        elif isinstance(choice, dict):
            title = choice.get("title")
            payload = choice.get("payload", title)
            if isinstance(payload, (int, float)) and not isinstance(payload, bool):
                payload = str(payload)
        else:
            title, payload = None, None
        if not isinstance(title, str) or not title.strip() or not isinstance(payload, str) or not payload:
            problems.append("choice %d skipped: needs a non-empty title and payload" % index)
            continue
        if len(replies) == MAX_QUICK_REPLIES:
            dropped = len(choices) - index
            problems.append("%d choices dropped: Messenger allows %d" % (dropped, MAX_QUICK_REPLIES))
            break
        replies.append({"content_type": "text", "title": title.strip()[:MAX_TITLE_CHARS], "payload": payload})
    return replies, problems


def attach_quick_replies(messages: List[str], replies: List[dict]) -> Tuple[List[str], str]:
    """Attaches `replies` to the last message with a "text"; appends a "Choose one:" text if none has one.

    Returns the new message list and a description of what was done, for the log. Messages that are not
    JSON objects are passed through unchanged.
    """
    result = list(messages)
    for index in range(len(result) - 1, -1, -1):
        try:
            message = json.loads(result[index])
        except ValueError:
            continue
        if isinstance(message, dict) and isinstance(message.get("text"), str):
            message["quick_replies"] = replies
            result[index] = to_json(message)
            what = "attached %d quick replies to message %d of %d" % (len(replies), index + 1, len(result))
            return result, what
    result.append(to_json({"text": CHOOSE_TEXT, "quick_replies": replies}))
    return result, "added a '%s' message with %d quick replies" % (CHOOSE_TEXT, len(replies))
