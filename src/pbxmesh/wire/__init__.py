"""Sans-IO wire codecs: the pbxmesh frame, and Asterisk's own ast_event as res_corosync sends it."""
