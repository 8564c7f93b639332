"""The pure core: directory, dialplan model and routing decisions.

Nothing in this package knows Asterisk, Twilio or Redis, and nothing reads the
clock: every decision takes `now` (an aware datetime) from its caller.
"""
