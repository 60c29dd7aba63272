"""The records of the contract: decoding and checking each topic's payloads, and rejections."""
