"""The todo API."""

from fastapi import FastAPI

app = FastAPI(title="todo-api")

TODOS: list[str] = []


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/todos")
def todos() -> list[str]:
    return TODOS


if __name__ == "__main__":
    import uvicorn

    uvicorn.run("app.main:app", host="0.0.0.0", port=8001)
