const express = require("express");

const app = express();
app.use(express.json());

const todos = [];

app.get("/healthz", (req, res) => res.json({ status: "ok" }));
app.get("/todos", (req, res) => res.json(todos));
app.post("/todos", (req, res) => {
  todos.push(req.body);
  res.status(201).json(req.body);
});

if (require.main === module) {
  const port = process.env.PORT || 3000;
  app.listen(port, () => console.log(`listening on ${port}`));
}

module.exports = app;
