module ferry.local/testenv/gitserver

go 1.26

require golang.org/x/crypto v0.45.0
