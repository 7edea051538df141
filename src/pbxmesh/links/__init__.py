"""Links to Asterisk: each one carries this server's own states into the cluster and the
rest of the cluster's states into its Asterisk."""
