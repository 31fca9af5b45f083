import { chromium } from "playwright-core";
const b = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
const p = await b.newPage({ viewport: { width: 1300, height: 1100 } });
await p.goto("http://127.0.0.1:18302/");
await p.waitForTimeout(2500);
await p.screenshot({ path: "follower.png", fullPage: false });
await b.close();
