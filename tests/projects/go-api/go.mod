module github.com/example/go-api

go 1.22
