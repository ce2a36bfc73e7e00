module ferry.local/testenv/testbox

go 1.26
