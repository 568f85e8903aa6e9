"""Seed 003's contract-net: a requester auctions work among a dozen provider runtimes."""
