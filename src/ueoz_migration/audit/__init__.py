"""The transition log for auditors: the hash chain, replay, verification, export."""
