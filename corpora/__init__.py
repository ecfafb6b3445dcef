"""Where text comes from: readers for raw dumps and dataset formats, and the record schemas."""
