"""A contract-net: a requester auctions work among a dozen provider runtimes."""
