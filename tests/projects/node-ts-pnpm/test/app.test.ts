import { describe, expect, it } from "vitest";
import { buildApp } from "../src/app.js";

describe("GET /healthz", () => {
  it("answers ok", async () => {
    const res = await buildApp().inject({ method: "GET", url: "/healthz" });
    expect(res.statusCode).toBe(200);
  });
});
