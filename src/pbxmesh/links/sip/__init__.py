"""Asterisk over SIP PUBLISH (res_pjsip_publish_asterisk): codec, publications, endpoint, link.

Why a small SIP stack of our own rather than a library: what PyPI offers does not fit this
subset. aiosip (asyncio) has been unmaintained since 2017; pjsua2 and its wheels bind PJSIP's
user agent with its own threads and media, not asyncio, and no event-state-compositor (the
RFC 3903 server side Asterisk publishes to); PyVoIP is a threaded, call-oriented phone; the
rest are thin or new. The subset is small -- RFC 3261 message syntax with compact headers,
Via/branch, CSeq, Content-Length, non-INVITE transactions and their timers, RFC 3903, digest
-- and is kept sans-IO (``message.py``, ``publication.py``, ``client.py``, ``transaction.py``,
``auth.py``) with the asyncio parts apart (``endpoint.py``, ``driver.py``), fuzzed like the
other codecs (``fuzz/fuzz_codecs.py sip``, hypothesis in the tests).
"""
