"""Asterisk over SIP PUBLISH (res_pjsip_publish_asterisk): codec, publications, endpoint."""
