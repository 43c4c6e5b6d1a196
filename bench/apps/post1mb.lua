-- wrk: POST a 1 MB body.
wrk.method = "POST"
wrk.body = string.rep("z", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
