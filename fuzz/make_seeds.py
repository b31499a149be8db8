"""Writes the fuzz seeds: the webhook bodies of the project's own tests (src/messenger/webhook.rs unit tests,
tests/*.rs, tests/common/mod.rs), and signature inputs built from them. Run: python3 fuzz/make_seeds.py"""
import json, os, hmac, hashlib
HERE = os.path.dirname(os.path.abspath(__file__))
W = os.path.join(HERE, "seeds", "webhook_parse")
S = os.path.join(HERE, "seeds", "signature_verify")
PAGE = "1111"
def dump(v): return json.dumps(v, separators=(",", ":"), ensure_ascii=False)
def body(items, page="P", time=1_700_000_000_000):
    return {"object": "page", "entry": [{"id": page, "time": time, "messaging": items}]}
def user_item(key, value):
    return {"sender": {"id": "U"}, "recipient": {"id": "P"}, "timestamp": 1_700_000_000_123, key: value}
def ev(key, value, ts, sender="u1", page=PAGE):
    d = {}
    if sender is not None: d["sender"] = {"id": sender}
    d["recipient"] = {"id": page}; d["timestamp"] = ts; d[key] = value
    return d
def text_event(psid, mid, text, ts):
    return ev("message", {"mid": mid, "text": text}, ts, psid)

seeds = {}
# --- src/messenger/webhook.rs unit tests
seeds["unit_text_quick_reply_reply_to"] = dump(body([user_item("message", {"mid": "m1", "text": "hi", "quick_reply": {"payload": "QR"}, "reply_to": {"mid": "m0"}})]))
seeds["unit_message_deleted"] = dump(body([user_item("message", {"mid": "m2", "is_deleted": True})]))
seeds["unit_attachments_every_type"] = dump(body([user_item("message", {"mid": "m", "attachments": [
    {"type": "image", "payload": {"url": "https://x/i.png"}},
    {"type": "audio", "payload": {"url": "https://x/a.mp4"}},
    {"type": "video", "payload": {"url": "https://x/v.mp4"}},
    {"type": "file", "payload": {"url": "https://x/f.pdf"}},
    {"type": "image", "payload": {"url": "https://x/s.png", "sticker_id": 369239263222822}},
    {"type": "fallback", "title": "A link", "URL": "https://x/l"},
    {"type": "location", "payload": {"coordinates": {"lat": 52.5, "long": 13.4}}},
    {"type": "template", "payload": {"template_type": "generic"}}]})]))
seeds["unit_echo"] = dump(body([{"sender": {"id": "P"}, "recipient": {"id": "U"}, "timestamp": 5,
    "message": {"mid": "e", "is_echo": True, "app_id": 42, "text": "bot"}}]))
seeds["unit_postback_referral"] = dump(body([user_item("postback", {"title": "Start", "payload": "GET_STARTED", "referral": {"ref": "ad7", "source": "ADS", "type": "OPEN_THREAD"}})]))
seeds["unit_referral"] = dump(body([user_item("referral", {"ref": "shortlink", "source": "SHORTLINK", "type": "OPEN_THREAD"})]))
seeds["unit_optin_user_ref"] = dump(body([{"recipient": {"id": "P"}, "timestamp": 7, "optin": {"ref": "cb", "user_ref": "UR1"}}]))
for key, value in [
    ("read", {"watermark": 1}),
    ("delivery", {"mids": ["a"], "watermark": 1}),
    ("reaction", {"mid": "m", "action": "react", "reaction": "love"}),
    ("message_edit", {"mid": "m", "text": "t", "num_edit": 1}),
    ("account_linking", {"status": "linked", "authorization_code": "secret"}),
    ("pass_thread_control", {"new_owner_app_id": 123, "metadata": ""}),
    ("take_thread_control", {"previous_owner_app_id": "1"}),
    ("request_thread_control", {"requested_owner_app_id": "1"}),
    ("app_roles", {"123": ["primary_receiver"]}),
    ("policy-enforcement", {"action": "block", "reason": "spam"}),
    ("brand_new_kind", {"x": 1}),
]:
    seeds["unit_" + key.replace("-", "_")] = dump(body([user_item(key, value)]))
seeds["unit_account_linking_code"] = dump(body([user_item("account_linking", {"status": "linked", "authorization_code": "CODE123"})]))
seeds["unit_optin_notification_token"] = dump(body([user_item("optin", {"type": "notification_messages", "notification_messages_token": "TOK9"})]))
raw = r'{"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":1700000000,"brand_new":{"caf\u00e9":1}}'
seeds["unit_unknown_escaped_seconds"] = '{"object":"page","entry":[{"id":"P","time":1700000000,"messaging":[' + raw + ']}]}'
seeds["unit_standby_and_batched"] = dump({"object": "page", "entry": [
    {"id": "P", "time": 1, "messaging": [user_item("message", {"mid": "a", "text": "1"})],
     "standby": [user_item("message", {"mid": "b", "text": "2"})]},
    {"id": 77, "time": 2, "messaging": [user_item("postback", {"payload": "X"})]}]})
seeds["unit_not_json"] = "{not json"
seeds["unit_not_object"] = "[1,2]"
seeds["unit_odd_items"] = '{"object":"page","entry":[{"id":"P","messaging":[1,"x",{"sender":{"id":"U"},"message":"oops"}]}]}'

# --- tests/common/mod.rs, tests/webhook.rs, tests/transformers.rs, tests/storage.rs
seeds["it_text"] = dump(body([text_event("u1", "m1", "hi", 1)], PAGE))
seeds["it_postback"] = dump(body([ev("postback", {"mid": "pb-2", "title": "Start", "payload": "IGNORED"}, 2)], PAGE))
seeds["it_escaped_unicode"] = ('{"object":"page","entry":[{"id":"1111","time":1,"messaging":[{"sender":{"id":"u1"},"recipient":{"id":"1111"},'
    r'"timestamp":1,"message":{"mid":"m1","text":"Gr\u00fc\u00dfe \/ \u003Cb\u003E \ud83d\ude00"}}]}]}')
seeds["it_empty"] = ""
seeds["it_no_entry"] = dump({"object": "page"})
seeds["it_entry_not_array"] = dump({"object": "page", "entry": "x"})
seeds["it_item_not_object"] = dump({"object": "page", "entry": [{"id": PAGE, "messaging": [7]}]})
seeds["it_other_object"] = dump({"object": "instagram", "entry": []})
seeds["it_batched_standby"] = dump({"object": "page", "entry": [
    {"id": PAGE, "time": 1, "messaging": [text_event("u1", "m1", "one", 1), text_event("u2", "m2", "two", 2)]},
    {"id": PAGE, "time": 2, "messaging": [text_event("u3", "m3", "three", 3)]},
    {"id": PAGE, "time": 3, "standby": [text_event("u4", "m4", "four", 4)]}]})
seeds["it_non_flow_kinds"] = dump(body([
    {"sender": {"id": PAGE}, "recipient": {"id": "u1"}, "timestamp": 1, "message": {"mid": "e1", "is_echo": True, "app_id": 1, "text": "bot said"}},
    ev("read", {"watermark": 1}, 2),
    ev("delivery", {"mids": ["x"], "watermark": 1}, 3),
    ev("reaction", {"mid": "m", "action": "react", "reaction": "love", "emoji": "\u2764"}, 4),
    ev("message_edit", {"mid": "m", "text": "x", "num_edit": 1}, 5),
    ev("account_linking", {"status": "unlinked"}, 6),
    ev("pass_thread_control", {"previous_owner_app_id": None, "new_owner_app_id": "123", "metadata": ""}, 7),
    ev("take_thread_control", {"previous_owner_app_id": "1", "metadata": ""}, 8),
    ev("request_thread_control", {"requested_owner_app_id": "1", "metadata": ""}, 9),
    ev("app_roles", {"123": ["primary_receiver"]}, 10, None),
    ev("policy-enforcement", {"action": "block", "reason": "spam"}, 11, None),
    ev("brand_new_kind", {"x": 1}, 12),
    ev("message", {"mid": "o1", "text": "elsewhere"}, 13, "u1", "9999"),
], PAGE))
seeds["it_other_page_entry"] = dump({"object": "page", "entry": [{"id": "9999", "time": 1, "messaging": [text_event("u1", "o2", "x", 1)]}]})
seeds["it_flow_kinds"] = dump(body([
    ev("message", {"mid": "a", "text": "Red", "quick_reply": {"payload": "COLOR_RED"}}, 1),
    ev("message", {"mid": "b", "attachments": [{"type": "sticker", "payload": {"url": "https://x/s.png", "sticker_id": 369239263222822}}]}, 2),
    ev("postback", {"mid": "c", "title": "Go", "payload": "GO", "referral": {"ref": "ad", "source": "ADS", "type": "OPEN_THREAD"}}, 3),
    ev("referral", {"ref": "shortlink", "source": "SHORTLINK", "type": "OPEN_THREAD"}, 4),
    ev("optin", {"ref": "cb", "user_ref": "ref-777"}, 5, None),
    ev("message", {"mid": "d", "attachments": [{"type": "fallback", "title": "link"}]}, 6),
    ev("message", {"mid": "e", "attachments": [{"type": "location", "payload": {"coordinates": {"lat": 52.5, "long": 13.4}}}]}, 7),
], PAGE))
seeds["it_flow_events_reaction_postback"] = dump(body([
    ev("reaction", {"mid": "m", "action": "react", "reaction": "like"}, 1),
    ev("postback", {"mid": "pb-2", "title": "Start", "payload": "IGNORED"}, 2)], PAGE))
seeds["it_sticker_like"] = dump(body([ev("message", {"mid": "m2", "sticker_id": 369239263222822,
    "attachments": [{"type": "image", "payload": {"url": "https://x/like.png", "sticker_id": 369239263222822}}]}, 2)], PAGE))
seeds["it_storage_visit"] = dump({"object": "page", "entry": [{"id": "2222", "time": 5, "messaging": [
    ev("message", {"mid": "m-u1-5", "text": "hi"}, 5, "u1", "2222")]}]})

os.makedirs(W, exist_ok=True)
for name, text in seeds.items():
    with open(os.path.join(W, name + ".json"), "wb") as f:
        f.write(text.encode())

# --- signature_verify: flags, tweak, secret \0 sha256 \0 sha1 \0 body
def s256(k, b): return "sha256=" + hmac.new(k, b, hashlib.sha256).hexdigest()
def s1(k, b): return "sha1=" + hmac.new(k, b, hashlib.sha1).hexdigest()
def sig_seed(flags, tweak, secret, h256, h1, b):
    return bytes([flags, tweak]) + secret + b"\0" + h256.encode() + b"\0" + h1.encode() + b"\0" + b
SECRET = b"app-secret-1111"
text = seeds["it_text"].encode()
uni = seeds["it_escaped_unicode"].encode()
small = b'{"object":"page","entry":[]}'
sig = {
    "sha256_right": sig_seed(1, 0, SECRET, s256(SECRET, text), "", text),
    "sha256_wrong_secret": sig_seed(1, 5, SECRET, s256(b"not-the-secret", text), "", text),
    "sha1_right": sig_seed(2, 7, SECRET, "", s1(SECRET, text), text),
    "both_sha256_wrong_sha1_right": sig_seed(3, 9, SECRET, s256(b"wrong", text), s1(SECRET, text), text),
    "missing": sig_seed(0, 0, SECRET, "", "", text),
    "escaped_unicode": sig_seed(1, 31, SECRET, s256(SECRET, uni), "", uni),
    "unit_right": sig_seed(1, 1, b"secret", s256(b"secret", small), "", small),
    "unit_other_secret": sig_seed(1, 2, b"other", s256(b"secret", small), "", small),
    "unit_tampered": sig_seed(1, 3, b"secret", s256(b"secret", small), "", b"tampered"),
    "unit_malformed_hex": sig_seed(1, 4, b"secret", "sha256=zz", "", small),
    "unit_no_prefix": sig_seed(1, 4, b"secret", s256(b"secret", small)[7:], "", small),
    "unit_sha1_only": sig_seed(2, 6, b"secret", "", s1(b"secret", b"{}"), b"{}"),
    "rfc4231_case2": sig_seed(1, 0, b"Jefe", s256(b"Jefe", b"what do ya want for nothing?"), "", b"what do ya want for nothing?"),
    "long_key": sig_seed(1, 17, b"k" * 100, s256(b"k" * 100, small), "", small),
    "empty_everything": bytes([3, 0, 0, 0, 0]),
}
os.makedirs(S, exist_ok=True)
for name, data in sig.items():
    with open(os.path.join(S, name + ".bin"), "wb") as f:
        f.write(data)
print(len(seeds), len(sig))
