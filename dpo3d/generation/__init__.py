"""Generation: batched seeded sampling from a policy and the resumable sampling run."""
