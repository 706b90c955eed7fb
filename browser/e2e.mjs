// Chromium end-to-end test of the admin UI: log in (keyboard only) -> create a connection against
// the fake provider -> Connect (the fake IdP consents by itself) -> status authorized -> send a
// test e-mail -> the sent e-mails page shows it `sent`.
//
// Run by `tests/it/http_ui.rs` (`browser_end_to_end`), which starts the fakes and Postern and
// then checks that the fake SMTP server holds the message. Inputs come from the environment;
// screenshots go to $POSTERN_SCREENSHOTS (under target/, never committed).
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`missing environment variable ${name}`);
  return v;
};
const base = env("POSTERN_URL");
const shots = env("POSTERN_SCREENSHOTS");
const conn = {
  user: env("FAKE_USER"),
  clientId: env("FAKE_CLIENT_ID"),
  clientSecret: env("FAKE_CLIENT_SECRET"),
  smtpPort: env("FAKE_SMTP_PORT"),
  authorizeUrl: env("FAKE_AUTHORIZE_URL"),
  tokenUrl: env("FAKE_TOKEN_URL"),
  caFile: env("FAKE_CA_FILE"),
};
const TIMEOUT = 15_000;

mkdirSync(shots, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "postern-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
  ],
  viewport: { width: 1024, height: 800 },
});
context.setDefaultTimeout(TIMEOUT);
const page = context.pages()[0] ?? (await context.newPage());
const errors = [];
page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

let step = 0;
async function shot(name) {
  step += 1;
  await page.screenshot({ path: join(shots, `${String(step).padStart(2, "0")}-${name}.png`), fullPage: true });
}
function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

try {
  // 1. Login, with the keyboard only.
  await page.goto(`${base}/admin`);
  check(page.url().includes("/admin/login"), "an anonymous visit lands on the login page");
  await shot("login");
  await page.getByLabel("User name").focus();
  await page.keyboard.type(env("POSTERN_ADMIN"));
  await page.keyboard.press("Tab");
  await page.keyboard.type(env("POSTERN_PASSWORD"));
  await page.keyboard.press("Enter");
  await page.waitForURL(`${base}/admin`);
  check(await page.getByRole("heading", { name: "Connections" }).isVisible(), "logged in: the dashboard shows");
  await shot("dashboard-empty");

  // 2. A connection against the fake provider, through the form.
  await page.getByRole("link", { name: "New connection" }).click();
  await page.getByLabel(/^Name\b/).fill("fake");
  await page.getByLabel("Display Name").fill("Fake provider");
  await page.getByLabel("Address").fill("127.0.0.1");
  await page.getByLabel("Port", { exact: true }).fill(conn.smtpPort);
  await page.getByLabel(/^User Name \(e-mail\)/).fill(conn.user);
  await page.getByLabel(/^Application \(client\) ID/).fill(conn.clientId);
  await page.getByLabel("Client Secret").fill(conn.clientSecret);
  await page.locator("summary", { hasText: "Advanced" }).click();
  await page.getByLabel("Authorize endpoint").fill(conn.authorizeUrl);
  await page.getByLabel("Token endpoint").fill(conn.tokenUrl);
  await page.getByLabel("CA file").fill(conn.caFile);
  await page.setViewportSize({ width: 375, height: 800 });
  await shot("connection-form-375px");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `the form fits a 375 px wide screen (overflow ${overflow}px)`);
  await page.setViewportSize({ width: 1024, height: 800 });
  await page.getByRole("button", { name: "Create connection" }).click();
  await page.waitForURL(/\/admin\/connections\/fake\?done=created/);
  check(await page.locator(".badge.new").isVisible(), "the new connection's status is `new`");
  await shot("connection-new");

  // 3. Connect: to the fake IdP (it consents by itself), back through /oauth/callback.
  await page.getByRole("button", { name: /Connect with Microsoft/ }).click();
  await page.waitForURL(/\/oauth\/callback|\/admin\/connections\/fake/);
  if (page.url().includes("/oauth/callback")) {
    check(await page.getByRole("heading", { name: "Connected" }).isVisible(), "the callback page says Connected");
    await shot("oauth-callback");
    await page.getByRole("link", { name: /Continue to the connection/ }).click();
  }
  await page.waitForURL(/\/admin\/connections\/fake/);
  await page.locator(".badge.authorized").waitFor();
  check(true, "the connection is authorized");
  await shot("connection-authorized");

  // 4. Send a test e-mail: each step is listed.
  await page.getByLabel("Send to").fill("someone@example.com");
  await page.getByRole("button", { name: "Send test e-mail" }).click();
  await page.getByText("Test e-mail sent to someone@example.com").waitFor();
  check(await page.locator("li.step-ok", { hasText: "auth" }).count() > 0, "the AUTH step succeeded");
  await shot("test-e-mail");

  // 5. The sent e-mails page shows it `sent`.
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Sent e-mails" }).click();
  const row = page.locator("tr", { hasText: "Postern test message via connection fake" });
  await row.waitFor();
  check(await row.locator(".badge.sent").isVisible(), "the test message is `sent` in the sent e-mails page");
  await shot("sent-e-mails");
  await row.getByRole("link").click();
  await page.getByRole("heading", { name: "Recipients" }).waitFor();
  await shot("message-detail");

  check(errors.length === 0, `no console errors (${errors.join("; ")})`);
  console.log("e2e: passed");
} catch (e) {
  await shot("failure").catch(() => {});
  console.error(`e2e: FAILED at ${page.url()}: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
