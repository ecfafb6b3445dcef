"""Near-duplicate detection machinery for the `minhash_dedup` stage: shingling and hashing (shingles), MinHash
signatures and band keys (minhash), the LSH S-curve and choice of bands (lsh), union-find (unionfind), the
shingle sets of candidate documents in bounded blocks (setstore) and the resumable resolve phases (resolve)."""
