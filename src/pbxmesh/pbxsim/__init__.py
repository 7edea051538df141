"""A PBX simulator that serves AMI as real Asterisk does: a tool for tests and the demo."""
