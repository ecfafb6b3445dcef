"""Near-duplicate detection machinery for the `minhash_dedup` stage: shingling and hashing (shingles),
MinHash signatures and band keys (minhash), the LSH S-curve (lsh), union-find (unionfind) and the resumable
resolve phases over files on disk (resolve)."""
