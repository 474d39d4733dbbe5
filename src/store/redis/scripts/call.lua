return decide(KEYS, ARGV)
