import { checkHpkeKnownAnswers } from "./hpke-kat";
console.log("checked", await checkHpkeKnownAnswers());
