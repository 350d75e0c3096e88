module kcoro.bench/go

go 1.21
