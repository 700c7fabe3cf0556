var builder = WebApplication.CreateBuilder(args);
var app = builder.Build();

app.MapGet("/", () => "Hello from ASP.NET Core");
app.MapGet("/healthz", () => Results.Ok(new { status = "ok" }));

app.Run();
