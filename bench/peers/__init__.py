"""Peer servers measured beside Switchboard (the Node one lives in ``bench/node-peer``)."""
