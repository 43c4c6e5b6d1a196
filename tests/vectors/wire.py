"""Send raw bytes on one connection, shut the write side, and split what
comes back into responses: the client side of the HTTP tests."""

import socket


def exchange(host, port, data, timeout=5.0):
    """Every response to `data`, and whether the server closed the connection."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        raw = b""
        closed = False
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            raw += chunk
    return parse_responses(raw), closed


def parse_responses(raw):
    """[(status, headers dict, body bytes, complete)] from a response stream."""
    out = []
    while raw:
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            out.append((0, {}, raw, False))
            break
        head, raw = raw[:end].decode("latin-1"), raw[end + 4:]
        lines = head.split("\r\n")
        try:
            status = int(lines[0].split(" ")[1])
        except (IndexError, ValueError):
            out.append((0, {}, head.encode("latin-1"), False))
            break
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            n = int(headers["content-length"])
            body, raw = raw[:n], raw[n:]
            out.append((status, headers, body, len(body) == n))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            complete = False
            while True:
                nl = raw.find(b"\r\n")
                if nl < 0:
                    break
                size = int(raw[:nl].split(b";")[0], 16)
                raw = raw[nl + 2:]
                if size == 0:
                    # Trailers, if any, then the empty line.
                    if raw.startswith(b"\r\n"):
                        raw = raw[2:]
                    else:
                        raw = raw[raw.find(b"\r\n\r\n") + 4:]
                    complete = True
                    break
                body, raw = body + raw[:size], raw[size + 2:]
            out.append((status, headers, body, complete))
        elif status in (204, 304) or 100 <= status < 200:
            out.append((status, headers, b"", True))
        else:
            out.append((status, headers, raw, True))
            raw = b""
    return out
