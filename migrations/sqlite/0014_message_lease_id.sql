-- The fence of a message's claim: a new id per claim. Recording an attempt, renewing or
-- returning a claim changes the message only while its lease_id is still the claimer's, so a
-- worker whose lease ran out and was taken over cannot overwrite the newer claim's outcome.
ALTER TABLE messages ADD COLUMN lease_id BIGINT;
