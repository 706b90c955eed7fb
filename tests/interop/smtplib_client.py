#!/usr/bin/env python3
"""Submit mail to Postern's relay with Python's own smtplib (a client no one here wrote).

Usage: smtplib_client.py HOST PORT CA_FILE USER PASSWORD MECHANISM FROM TO MARKER

Sends three messages over STARTTLS with AUTH MECHANISM (PLAIN or LOGIN): plain ASCII, an
8-bit body (Content-Transfer-Encoding: 8bit, BODY=8BITMIME) and UTF-8 headers plus an
internationalized recipient (SMTPUTF8). Prints one JSON line per message.
"""
import json
import smtplib
import ssl
import sys
from email.message import EmailMessage
from email.policy import SMTPUTF8


def main() -> int:
    host, port, ca, user, password, mech, sender, rcpt, marker = sys.argv[1:10]
    context = ssl.create_default_context(cafile=ca)
    with smtplib.SMTP(host, int(port), timeout=30) as s:
        s.ehlo("smtplib.test")
        s.starttls(context=context)
        s.ehlo("smtplib.test")
        # smtplib picks the first mechanism it knows from the server's list; force ours.
        s.user, s.password = user, password
        code, text = s.auth(mech.upper(), getattr(s, "auth_" + mech.lower()))
        print(json.dumps({"auth": mech, "code": code}))

        ascii_msg = EmailMessage()
        ascii_msg["From"], ascii_msg["To"] = sender, rcpt
        ascii_msg["Subject"] = f"{marker}-ascii"
        ascii_msg.set_content(f"plain ascii {marker}\n")
        s.send_message(ascii_msg)
        print(json.dumps({"sent": f"{marker}-ascii"}))

        eight = EmailMessage()
        eight["From"], eight["To"] = sender, rcpt
        eight["Subject"] = f"{marker}-8bit"
        eight.set_content(f"8-bit body: caf\u00e9 na\u00efve \u00fcber {marker}\n", cte="8bit")
        s.send_message(eight)
        print(json.dumps({"sent": f"{marker}-8bit", "esmtp": "8BITMIME" if s.has_extn("8bitmime") else ""}))

        utf8 = EmailMessage(policy=SMTPUTF8)
        utf8["From"] = sender
        utf8["To"] = f"J\u00fcrgen <j\u00fcrgen@b\u00fccher.example>"
        utf8["Subject"] = f"{marker}-utf8 \u2603 \u00e9t\u00e9"
        utf8.set_content(f"UTF-8 everywhere \u2603 {marker}\n", cte="8bit")
        s.send_message(utf8)
        print(json.dumps({"sent": f"{marker}-utf8", "smtputf8": s.has_extn("smtputf8")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
