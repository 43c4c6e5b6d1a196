"""A small real Flask app: routing, a form POST, JSON in and out, a fixed-size body."""

import os
import sys

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from Flask"


@app.get("/python")
def python():
    """The interpreter serving (the wheel tests check it is the venv's)."""
    return "%d.%d %s" % (sys.version_info[0], sys.version_info[1], sys.prefix)


@app.get("/items/<int:item_id>")
def item(item_id):
    return jsonify(id=item_id, name="item %d" % item_id, q=request.args.get("q"))


@app.post("/form")
def form():
    return "name=%s age=%s" % (request.form["name"], request.form.get("age", "?"))


@app.post("/json")
def json_echo():
    data = request.get_json()
    return jsonify(received=data, count=len(data))


@app.get("/pid")
def pid():
    return str(os.getpid())


@app.get("/big")
def big():
    return "x" * 100000
