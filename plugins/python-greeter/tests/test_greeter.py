"""Unit tests of greeter.py on the host: python3 -m unittest discover -s tests (from the plugin's folder)."""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import greeter  # noqa: E402


class FirstName(unittest.TestCase):
    def test_present(self):
        self.assertEqual(greeter.first_name('{"id":"1","first_name":" Ana "}'), "Ana")

    def test_missing_or_bad(self):
        bad = [None, "", "not json", "[]", '{"last_name":"X"}', '{"first_name":""}', '{"first_name":3}']
        for profile in bad:
            self.assertIsNone(greeter.first_name(profile), profile)


class State(unittest.TestCase):
    def test_first_time(self):
        state, usable = greeter.parse_state(None)
        self.assertTrue(usable)
        self.assertTrue(greeter.needs_greeting_step(state))

    def test_after_greeting(self):
        state, usable = greeter.parse_state('{"greeted": false, "other": 1}')
        self.assertTrue(usable)
        self.assertFalse(greeter.needs_greeting_step(state))

    def test_foreign_value(self):
        self.assertEqual(greeter.parse_state("[1]"), (None, False))
        self.assertEqual(greeter.parse_state("nope"), (None, False))


class QuickReplies(unittest.TestCase):
    def test_strings_and_objects(self):
        data = json.dumps({"choices": ["Yes", {"title": "A very long title that is cut", "payload": "LONG"},
                                       {"title": "Only title"}, {"title": "Num", "payload": 7}]})
        replies, problems = greeter.quick_replies(data)
        self.assertEqual(problems, [])
        self.assertEqual(replies, [
            {"content_type": "text", "title": "Yes", "payload": "Yes"},
            {"content_type": "text", "title": "A very long title th", "payload": "LONG"},
            {"content_type": "text", "title": "Only title", "payload": "Only title"},
            {"content_type": "text", "title": "Num", "payload": "7"},
        ])

    def test_at_most_13(self):
        replies, problems = greeter.quick_replies(json.dumps({"choices": [str(i) for i in range(20)]}))
        self.assertEqual(len(replies), 13)
        self.assertEqual(len(problems), 1)

    def test_bad_entries_skipped(self):
        replies, problems = greeter.quick_replies(json.dumps({"choices": ["ok", 1, {"payload": "x"}, ""]}))
        self.assertEqual([r["title"] for r in replies], ["ok"])
        self.assertEqual(len(problems), 3)

    def test_no_choices(self):
        for data in [None, "", "{}", '{"other": [1]}', "[1]"]:
            self.assertEqual(greeter.quick_replies(data), ([], []), data)
        self.assertEqual(greeter.quick_replies('{"choices": "a"}')[0], [])
        self.assertEqual(greeter.quick_replies("nope")[0], [])


class Attach(unittest.TestCase):
    QR = [{"content_type": "text", "title": "Yes", "payload": "Yes"}]

    def test_last_text_message(self):
        messages = ['{"text":"one"}', '{"text":"two"}', '{"attachment":{"type":"image"}}']
        result, what = greeter.attach_quick_replies(messages, self.QR)
        self.assertEqual(result[0], messages[0])
        self.assertEqual(json.loads(result[1]), {"text": "two", "quick_replies": self.QR})
        self.assertEqual(result[2], messages[2])
        self.assertIn("message 2 of 3", what)

    def test_no_text_message(self):
        result, _ = greeter.attach_quick_replies(['{"attachment":{}}'], self.QR)
        self.assertEqual(len(result), 2)
        self.assertEqual(json.loads(result[1]), {"text": "Choose one:", "quick_replies": self.QR})
        result, _ = greeter.attach_quick_replies([], self.QR)
        self.assertEqual(json.loads(result[0])["text"], "Choose one:")

    def test_greeting(self):
        self.assertEqual(json.loads(greeter.greeting_message("Zoë")), {"text": "Hi Zoë!"})


if __name__ == "__main__":
    unittest.main()
