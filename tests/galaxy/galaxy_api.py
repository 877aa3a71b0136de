"""Small Galaxy API helper for the test scripts (standard library only).

    python galaxy_api.py URL ADMIN_KEY user-key EMAIL
        print an API key of user EMAIL (the user is made when missing)
    python galaxy_api.py URL ADMIN_KEY import-workflow EMAIL WORKFLOW.ga
        import and publish a workflow as user EMAIL, unless one of that name is there already

planemo's external-Galaxy engine makes its own test user and a fresh API key for it, which
invalidates the key of any other planemo process running at the same time; so each planemo
process of a parallel run gets its own user and key from here.
"""

from __future__ import annotations

import json
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request


class Galaxy:
    def __init__(self, url: str, key: str):
        self.url = url.rstrip("/")
        self.key = key

    def call(self, method: str, path: str, payload: dict | None = None):
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"x-api-key": self.key,
                                              "content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.load(resp)

    def user_key(self, email: str) -> str:
        users = self.call("GET", "/api/users?f_email=" + urllib.parse.quote(email))
        users = [u for u in users if u.get("email") == email]
        if users:
            user_id = users[0]["id"]
        else:
            name = email.split("@")[0].lower().replace("_", "-")
            user = self.call("POST", "/api/users", {"email": email, "username": name,
                                                    "password": secrets.token_hex(12)})
            user_id = user["id"]
        return self.call("POST", f"/api/users/{user_id}/api_key")


    def import_workflow(self, email: str, path: str) -> str:
        """Import and publish *path* (a .ga) as *email* (workflows need a real user's key)."""
        with open(path, encoding="utf-8") as fh:
            workflow = json.load(fh)
        user = Galaxy(self.url, self.user_key(email))
        for existing in user.call("GET", "/api/workflows"):
            if existing.get("name") == workflow.get("name"):
                return f"workflow '{workflow.get('name')}' already imported"
        user.call("POST", "/api/workflows", {"workflow": workflow, "publish": True, "importable": True})
        return f"workflow '{workflow.get('name')}' imported and published"


def main(argv: list[str]) -> None:
    if len(argv) == 5 and argv[3] == "user-key":
        url, key, _, email = argv[1:]
        action = lambda g: g.user_key(email)  # noqa: E731
    elif len(argv) == 6 and argv[3] == "import-workflow":
        url, key, _, email, path = argv[1:]
        action = lambda g: g.import_workflow(email, path)  # noqa: E731
    else:
        raise SystemExit(__doc__)
    try:
        print(action(Galaxy(url, key)))
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"galaxy_api: {exc} {exc.read().decode(errors='replace')[:300]}")


if __name__ == "__main__":
    main(sys.argv)
