#!/usr/bin/env python3
"""Pre-generates signed Twilio WhatsApp webhooks for scripts/bench-chat.

wrk's Lua cannot compute HMAC-SHA1, so every request is made here, once,
before the run: one line per request, `<X-Twilio-Signature>\t<form body>`.
scripts/bench-chat.lua loads the file and sends each line once.

Each request looks like Twilio's inbound WhatsApp webhook: a unique
MessageSid (SM + 32 hex, so no request takes the duplicate path), our
AccountSid, From = whatsapp:+601<8 digits> spread over --senders shoppers
(or one sender per request with --distinct-senders), To = the shop's
number, a short shopper question as Body, ProfileName, WaId, NumMedia=0.

Twilio's signature: base64(HMAC-SHA1(auth token, URL + the parameters
sorted by name, each as name + value)), over the decoded values; the URL
is the server's public URL + /webhooks/twilio, not the loopback address the
requests are sent to.

Usage: bench-chat-requests.py --token T --url URL --count N --out FILE
           [--senders S | --distinct-senders] [--seed SEED]
"""

import argparse
import base64
import hashlib
import hmac
import random
import sys
import time
import urllib.parse

ACCOUNT_SID = "AC" + "b" * 32
SHOP_NUMBER = "whatsapp:+14155238886"

# What shoppers ask a batik and handicraft shop, in the languages it meets.
QUESTIONS = [
    "Do you ship to Sabah?",
    "How much is shipping to Kota Kinabalu?",
    "How long does delivery to Sarawak take?",
    "Can I return a shirt that doesn't fit?",
    "What is your return policy?",
    "How do I get a refund?",
    "What payment methods do you accept?",
    "Can I pay with FPX or Touch 'n Go?",
    "How do I wash a hand-drawn batik shirt?",
    "Will the colours of my batik fade in the wash?",
    "Can I iron batik silk?",
    "Where is my order?",
    "Has my order shipped yet?",
    "Do you have the batik shirt in XL?",
    "Is the songket scarf handmade?",
    "Do you deliver to Singapore?",
    "Boleh hantar ke Sabah?",
    "Berapa lama penghantaran ke Kuching?",
    "Macam mana nak basuh baju batik?",
    "Boleh bayar guna FPX?",
    "Can I change my delivery address?",
    "Do you offer gift wrapping?",
    "Are your products made in Malaysia?",
    "What sizes do the kebaya come in?",
]

NAMES = ["Aisyah", "Mei Ling", "Kumar", "Farid", "Siti", "Wei Jie", "Priya", "Hafiz", "Nurul", "Jason"]


def sign(token: bytes, url: str, params: dict) -> str:
    message = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(token, message.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--token", required=True, help="the server's twilio.auth_token")
    parser.add_argument("--url", required=True, help="the URL Twilio signs: public_url + /webhooks/twilio")
    parser.add_argument("--count", type=int, required=True, help="requests to generate")
    parser.add_argument("--out", required=True, help="output file")
    senders = parser.add_mutually_exclusive_group()
    senders.add_argument("--senders", type=int, default=5000, help="distinct shoppers (default 5000)")
    senders.add_argument("--distinct-senders", action="store_true", help="one shopper per request")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be at least 1")
    if args.distinct_senders and args.count > 100_000_000:
        parser.error("--distinct-senders supports at most 100,000,000 requests (8 digits)")

    started = time.monotonic()
    token = args.token.encode("utf-8")
    rng = random.Random(args.seed)
    # A random prefix per run: MessageSids never repeat across runs either,
    # so a database reused by mistake would not turn requests into duplicates.
    run_prefix = "%08x" % rng.getrandbits(32)
    # Phone numbers: +601 followed by 8 digits, distinct per sender index.
    base = rng.randrange(0, 100_000_000 - max(args.count, args.senders))
    quote = urllib.parse.quote_plus
    with open(args.out, "w", encoding="ascii", newline="\n") as out:
        for i in range(args.count):
            sender = i if args.distinct_senders else i % args.senders
            digits = "%08d" % (base + sender)
            params = {
                "AccountSid": ACCOUNT_SID,
                "Body": QUESTIONS[rng.randrange(len(QUESTIONS))],
                "From": "whatsapp:+601" + digits,
                "MessageSid": "SM%s%024x" % (run_prefix, i),
                "NumMedia": "0",
                "ProfileName": NAMES[sender % len(NAMES)],
                "To": SHOP_NUMBER,
                "WaId": "601" + digits,
            }
            body = "&".join(quote(k) + "=" + quote(v) for k, v in params.items())
            out.write(sign(token, args.url, params))
            out.write("\t")
            out.write(body)
            out.write("\n")
    elapsed = time.monotonic() - started
    print(f"generated {args.count} signed requests in {elapsed:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
